"""One module of defaults: the Makefile, the train CLI, make all's pipeline and make paper agree with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from train.defaults import DEFAULTS, MAKEFILE_VARIABLES, PROTOCOLS, as_text

ROOT = Path(__file__).resolve().parent.parent


def _makefile_defaults() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^([A-Z_]+)\s+\?=[ \t]*(.*)$", text, re.M)}


def test_makefile_defaults_equal_train_defaults() -> None:
    make = _makefile_defaults()
    for var, field in MAKEFILE_VARIABLES.items():
        assert var in make, f"Makefile lacks {var}"
        assert make[var] == as_text(getattr(DEFAULTS, field)), f"Makefile {var}={make[var]} but defaults {field}"
    assert DEFAULTS.protocol in PROTOCOLS


def test_pipeline_and_train_cli_defaults_come_from_the_module() -> None:
    from report.pipeline import PipelineSettings
    from report.pipeline import main as pipeline_main
    from train.__main__ import DEFAULTS as TRAIN_CLI
    from train.fit import TrainConfig

    params = {p.name: p.default for p in pipeline_main.params}
    assert params["backbone"] == DEFAULTS.backbone and params["image_size"] == DEFAULTS.image_size
    assert params["epochs"] == DEFAULTS.epochs and params["protocol"] == DEFAULTS.protocol
    assert params["precision"] == as_text(DEFAULTS.precisions) and params["weights"] == DEFAULTS.weights
    assert str(params["data"]) == DEFAULTS.data and str(params["run"]) == DEFAULTS.run
    s = PipelineSettings(data=Path("d"), run=Path("r"))
    assert (s.backbone, s.image_size, s.epochs, s.protocol) == (
        DEFAULTS.backbone, DEFAULTS.image_size, DEFAULTS.epochs, DEFAULTS.protocol)
    protocol = PROTOCOLS[DEFAULTS.protocol]
    cfg = TrainConfig("d", "o")
    assert (cfg.backbone, cfg.image_size, cfg.epochs, cfg.freeze_base) == (
        DEFAULTS.backbone, (DEFAULTS.image_size,) * 2, DEFAULTS.epochs, protocol.freeze_base)
    assert TRAIN_CLI["backbone"] == cfg.backbone and TRAIN_CLI["freeze_base"] == cfg.freeze_base
    assert TRAIN_CLI["weights"] == cfg.weights == (protocol.weights or DEFAULTS.weights)


def test_train_cli_protocol_sets_the_protocol_and_flags_win(tmp_path: Path) -> None:
    from train.__main__ import resolve_config

    flags = {"data": "d", "out": str(tmp_path)}
    cfg = resolve_config(None, False, None, flags, "scratch")
    assert cfg.weights == "none" and not cfg.freeze_base
    cfg = resolve_config(None, False, None, {**flags, "weights": "imagenet"}, "fine-tune")
    assert cfg.weights == "imagenet" and not cfg.freeze_base and cfg.use_freeze_bn
    assert cfg.warmup_epochs == PROTOCOLS["fine-tune"].warmup_epochs
    assert cfg.fine_tune_learning_rate == PROTOCOLS["fine-tune"].fine_tune_learning_rate
    assert resolve_config(None, False, None, {**flags, "freeze_base": False}, "frozen").freeze_base is False


def test_pipeline_train_command_passes_the_protocol() -> None:
    from report.pipeline import PipelineError, PipelineSettings, train_command

    cmd = train_command(PipelineSettings(data=Path("d"), run=Path("r"), weights="imagenet", protocol="scratch"))
    assert cmd[cmd.index("--protocol") + 1] == "scratch" and cmd[cmd.index("--weights") + 1] == "none"
    with pytest.raises(PipelineError, match="protocol='bogus'"):
        PipelineSettings(data=Path("d"), run=Path("r"), protocol="bogus")


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize(("target", "flags"), [
    ("paper", ["--epochs 3", "--num-images 120", "--threads 2", "--seed 7", "--weights none"]),
    ("all", ["--epochs 3", "--num-images 120", "--threads 2", "--seed 7", "--protocol fine-tune"]),
    ("train", ["--epochs 3", "--seed 7", "--protocol fine-tune"]),
    ("compare", ["--seed 7"]),
])
def test_make_targets_pass_their_variables(target: str, flags: list[str]) -> None:
    out = subprocess.run(["make", "-n", "--no-print-directory", target, "EPOCHS=3",
                          "NUM_IMAGES=120", "THREADS=2", "SEED=7", "PROTOCOL=fine-tune"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    line = " ".join(out.stdout.replace("\\\n", " ").split())
    for flag in flags:
        assert flag in line, (flag, line[-600:])


# A command in the docs that writes the default dataset or run folder states the defaults: its flags
# must be train/defaults.py's (flag -> Defaults field; "..." stands for "any").
_DOC_FLAGS = {
    "datasets synth": ("--out data/synthetic", {"--num-images": "num_images", "--image-size": "synth_size",
                                                "--holdout-combos": "holdout_combos", "--seed": "seed"}),
    "train": ("--out runs/default", {"--backbone": "backbone", "--weights": "weights", "--protocol": "protocol",
                                     "--image-size": "image_size", "--epochs": "epochs", "--seed": "seed",
                                     "--approach": "approaches", "--batch-size": "batch_size"}),
    "convert": ("runs/default", {"--precision": "precisions"}),
}


def _doc_commands() -> list[tuple[str, str]]:
    """(page, command) for every ``python -m ...`` command of a code block or a list item in README.md
    and docs/ (continuations joined); a command quoted in a paragraph records what was run once."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", page.read_text())
        places = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"^\s*(?:\d+\.|-) .*$", text, flags=re.M)
        found += [(page.name, m.group(0)) for place in places for m in re.finditer(r"python -m [^\n`;]+", place)]
    return found


def test_docs_stated_defaults_equal_train_defaults() -> None:
    """docs/training.md's ``Defaults`` line and every doc command that makes the default data or run."""
    checked, wrong = 0, []
    training = (ROOT / "docs" / "training.md").read_text()
    stated = re.search(r"Defaults \(train/defaults\.py[^`]*`([^`]+)`", training)
    assert stated, "docs/training.md lost its Defaults line"
    for var, value in re.findall(r"([A-Z_]+)=(\S+)", stated.group(1)):
        checked += 1
        if value != as_text(getattr(DEFAULTS, MAKEFILE_VARIABLES[var])):
            wrong.append(f"training.md: {var}={value}")
    for page, command in _doc_commands():
        for stage, (marker, flags) in _DOC_FLAGS.items():
            if not command.startswith(f"python -m {stage} ") or marker not in command:
                continue
            for flag, value in re.findall(r"(--[a-z-]+)[ =](\S+)", command):
                if flag in flags and value != "...":
                    checked += 1
                    if value != as_text(getattr(DEFAULTS, flags[flag])):
                        wrong.append(f"{page}: {command} ({flag} {value})")
    assert checked >= 10 and not wrong, wrong


def test_synth_cli_defaults_are_make_all_s() -> None:
    from datasets.__main__ import synth

    params = {p.name: p.default for p in synth.params}
    assert (params["num_images"], params["image_size"], params["holdout_combos"], params["seed"]) == (
        DEFAULTS.num_images, DEFAULTS.synth_size, DEFAULTS.holdout_combos, DEFAULTS.seed)
