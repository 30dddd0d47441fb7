"""make compare: the table is compare.json's numbers; end to end on a tiny set (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from report.experiments.compare import compare_markdown, summarise, train_command


def _train_json(acc: float) -> dict:
    def variant(a: str) -> dict:
        return {"approach": a, "train_wall_s": 12.5, "feature_extract_s": 3.0, "metrics": {
            "test": {"n": 10, "heads": {"make": {"accuracy": acc}, "type": {"accuracy": acc / 2}},
                     "joint_accuracy": acc / 3},
            "test_unseen": {"n": 4, "heads": {"make": {"accuracy": 0.5}, "type": {"accuracy": 0.25}},
                            "joint_accuracy": 0.125}}}

    return {"variants": {a: variant(a) for a in ("multihead", "joint", "separate")},
            "feature_extraction": {"backbone_image_passes": 40}}


def test_markdown_shows_every_number_of_compare_json() -> None:
    record = {"backbone": "b", "image_size": 96, "epochs": 2, "seed": 0, "data": "d", "num_images": 40,
              "protocols": {
                  "scratch": {"description": "x", "run": "r/s", "weights": "none", "wall_s": 9.0,
                              "approaches": summarise(_train_json(0.9))},
                  "frozen": {"description": "y", "run": "r/f", "weights": "imagenet", "wall_s": 5.0,
                             "backbone_image_passes": 40, "approaches": summarise(_train_json(0.6))}}}
    text = compare_markdown(record)
    assert "| scratch | 90.0 % | 90.0 % | 90.0 % |" in text  # make accuracy (test)
    assert "| frozen | 30.0 % | 30.0 % | 30.0 % |" in text  # type accuracy (test) = 0.6 / 2
    assert "| frozen | 20.0 % | 20.0 % | 20.0 % |" in text  # joint (test) = 0.6 / 3
    assert "| scratch | 12.5 % | 12.5 % | 12.5 % |" in text  # unseen joint
    assert "| frozen | 12 s | 12 s | 12 s |" in text and "backbone image passes 40" in text


def test_scratch_trains_without_weights_whatever_is_asked() -> None:
    cmd = train_command(Path("d"), Path("r"), "scratch", "efficientnet_lite0", 96, 2, 0, "imagenet")
    assert cmd[cmd.index("--weights") + 1] == "none" and cmd[cmd.index("--protocol") + 1] == "scratch"
    cmd = train_command(Path("d"), Path("r"), "frozen", "efficientnet_lite0", 96, 2, 0, "imagenet")
    assert cmd[cmd.index("--weights") + 1] == "imagenet"


@pytest.mark.slow
def test_compare_end_to_end_on_a_tiny_set(tmp_path: Path) -> None:
    """Three protocols with tiny_cnn (no pretrained weights: frozen is a random base here), 1 epoch."""
    out = tmp_path / "cmp"
    args = [sys.executable, "-m", "report.experiments.compare", "--out", str(out), "--backbone", "tiny_cnn", "--image-size",
            "32", "--epochs", "1", "--num-images", "120", "--weights", "none"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "compare.json").read_text())
    assert list(record["protocols"]) == ["scratch", "frozen", "fine-tune"]
    for name, p in record["protocols"].items():
        train = json.loads((out / name / "train.json").read_text())
        assert p["approaches"] == summarise(train)
        assert set(p["approaches"]) == {"multihead", "joint", "separate"}
    frozen = json.loads((out / "frozen" / "train.json").read_text())
    assert frozen["mode"] == "freeze_base"
    assert record["protocols"]["frozen"]["backbone_image_passes"] == frozen["feature_extraction"]["images"]
    assert json.loads((out / "fine-tune" / "config.json").read_text())["warmup_epochs"] > 0
    assert (out / "compare.md").read_text() == __import__("report.experiments.compare", fromlist=["x"]).compare_markdown(record)
