"""Hostile model files, cards and paths, each built in code (tests/hostile_models.py): every one gives
a one-line error and an exit status within a time limit; no crash, no hang, no traceback, no secret
echoed. The files that crash or hang the bare interpreter are checked to do so (in a child), so the
tests prove the model check is what stands in the way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401

pytest.importorskip("flatbuffers", reason="the hostile files are built with the flatbuffers package (main env)")
pytest.importorskip("ai_edge_litert", reason="the hostile files are edited with ai_edge_litert's schema classes")

import hostile_models as hm  # noqa: E402

from edge.safety.modelcheck import ModelCheckError, check_model_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 60


def _edge(*args, env_extra=None) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge", *map(os.fsdecode, args)], capture_output=True,
                          env=env, cwd=REPO, timeout=LIMIT_S)
    return proc, time.perf_counter() - t0


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 1) -> str:
    """The run ended with ``code`` and at most one 'Error:' line, no traceback; returns stderr."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, (proc.returncode, err[-1500:])
    assert "Traceback" not in err, err[-2000:]
    assert len([ln for ln in err.splitlines() if ln.startswith("Error:")]) <= 1, err
    return err


@pytest.fixture()
def src(edge_fx) -> Path:
    return edge_fx / "models" / "multihead.int8.tflite"


def _bare_interpreter(path: Path, timeout_s: float = 15) -> str:
    """What the bare interpreter (no model check) does with ``path`` in a child: ran, crashed or hung."""
    code = ("import sys, numpy as np\nfrom edge.runtime.interpreter import load_interpreter_class\n"
            "i = load_interpreter_class()[0](model_path=sys.argv[1]); i.allocate_tensors()\n"
            "r = i.get_signature_runner('serving_default')\n"
            "r(**{k: np.zeros(v['shape'], v['dtype']) for k, v in r.get_input_details().items()})\nprint('ran')")
    try:
        p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=timeout_s,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return "hung"
    return "crashed" if p.returncode < 0 else ("ran" if p.returncode == 0 else "error")


MODEL_CASES = {
    "signature_subgraph_5": (hm.signature_subgraph(5), None, "signature", "crashed"),
    "signature_subgraph_1": (hm.signature_subgraph(1), None, "signature", "crashed"),
    "signature_input_constant": (hm.signature_input_constant, None, "signature", "crashed"),
    "while_true_first": (hm.while_true_first, None, "subgraphs", "hung"),
    "input_8192": (*hm.huge_input(8192), "size", None),
    "absurd_scale": (hm.absurd_scale, None, "quantization", None),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_hostile_model_is_refused_by_the_check(case, src, tmp_path):
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    edit_model, edit_card, rule, _ = MODEL_CASES[case]
    f = hm.rewrite(src, tmp_path / f"{case}.tflite", edit_model, edit_card)
    with pytest.raises(ModelCheckError, match=rf"{case}\.tflite: refused by the model check \({rule}\)"):
        check_model_file(f, None)
    with pytest.raises(ModelCheckError, match=rf"\({rule}\)"):  # before any interpreter sees it
        Predictor(next(iter(discover(f).values())))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_hostile_model_cli_gives_one_line(case, src, tmp_path, edge_fx):
    edit_model, edit_card, rule, _ = MODEL_CASES[case]
    f = hm.rewrite(src, tmp_path / f"{case}.tflite", edit_model, edit_card)
    for args in (("predict", f, edge_fx / "images"), ("predict", f, edge_fx / "images", "--format", "jsonl"),
                 ("info", f)):
        proc, seconds = _edge(*args)
        if args[0] == "info":  # info describes the file, says it is refused, and never probes it
            out = proc.stdout.decode()
            assert proc.returncode == 0 and "loads here: NO" in out and f"({rule})" in out, out
        else:
            assert f"({rule})" in _one_line_error(proc)
        assert seconds < LIMIT_S


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c, v in MODEL_CASES.items() if v[3]])
def test_the_bare_interpreter_does_crash_or_hang_on_them(case, src, tmp_path):
    edit_model, edit_card, _, bare = MODEL_CASES[case]
    f = hm.rewrite(src, tmp_path / f"{case}.tflite", edit_model, edit_card)
    assert _bare_interpreter(f) == bare


def test_real_models_pass_the_check(edge_fx):
    # Its cost (target: under 5 ms on the default int8 model) is a benchmark figure, not a test:
    # docs/security.md gives the measurement and the command.
    for f in sorted((edge_fx / "models").glob("*.tflite")):
        summary = check_model_file(f)
        assert summary.operators and summary.arena_mb > 0


def test_limits_are_configurable(src):
    from edge.safety.modelcheck import ModelLimits

    with pytest.raises(ModelCheckError, match="over the limit of 100 "):
        check_model_file(src, None, ModelLimits(max_input_pixels=100))
    with pytest.raises(ModelCheckError, match="--max-arena-mb"):
        check_model_file(src, None, ModelLimits(max_arena_mb=0.001))


@pytest.mark.slow
def test_limits_are_configurable_on_the_cli(src, edge_fx):
    proc, _ = _edge("predict", src, edge_fx / "images", "--max-input-pixels", "100")
    assert "--max-input-pixels" in _one_line_error(proc)
    proc, _ = _edge("predict", src, edge_fx / "images", "--max-arena-mb", "0.001")
    assert "--max-arena-mb" in _one_line_error(proc)


CARD_EDITS = {
    "surrogate_class": lambda c: hm.card_with_schema_class(c, "make", "audi", "au\udc80di"),
    "runtime_compat_str": lambda c: c.with_updates(runtime_compat="loads"),
    "runtime_compat_list": lambda c: c.with_updates(runtime_compat=["x"]),
    "runtime_compat_int": lambda c: c.with_updates(runtime_compat=7),
    "runtime_compat_entry": lambda c: c.with_updates(runtime_compat={"rt": {"loads": "yes"}}),
    "control_chars_variant": lambda c: c.with_updates(variant="evil\n\x1b]0;pwned\x07"),
    "bidi_backbone": lambda c: c.with_updates(backbone="mobile\u202enet"),
}


@pytest.mark.parametrize("name", sorted(CARD_EDITS))
def test_hostile_cards_are_refused_in_one_line(name, src, tmp_path):
    from edge.contract.card import CardError
    from edge.contract.card_archive import read_card

    f = hm.rewrite(src, tmp_path / f"{name}.tflite", None, CARD_EDITS[name])
    with pytest.raises(CardError, match="malformed card") as e:
        read_card(f)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value) and "\udc80" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["surrogate_class", "runtime_compat_str", "control_chars_variant"])
def test_hostile_cards_give_one_line_on_the_cli(name, src, tmp_path, edge_fx):
    f = hm.rewrite(src, tmp_path / f"{name}.tflite", None, CARD_EDITS[name])
    for args in (("info", f), ("predict", f, edge_fx / "images"), ("predict", f, edge_fx / "images", "--format", "csv")):
        proc, seconds = _edge(*args, env_extra={"PYTHONIOENCODING": "utf-8:strict"})
        out = proc.stdout.decode("utf-8") + proc.stderr.decode("utf-8")  # strict: valid UTF-8 or this raises
        assert "Traceback" not in out and "\x1b" not in out and "pwned\x07" not in out
        assert "malformed card" in out, out[-1000:]
        assert seconds < LIMIT_S
        if args[0] == "predict":
            _one_line_error(proc)


def test_labels_csv_symlink_to_a_secret_is_refused(tmp_path):
    from edge.runtime.labels import read_labels_csv
    from edge.safety.paths import PathError

    (tmp_path / "images").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("image,split,TOP-SECRET-LINE\n")
    (tmp_path / "images" / "labels.csv").symlink_to(secret)
    with pytest.raises(PathError, match="points outside") as e:
        read_labels_csv(tmp_path / "images" / "labels.csv")
    assert "TOP-SECRET" not in str(e.value)
    secret.write_text("name,TOP-SECRET-LINE\n")  # a bad header is never quoted either
    (tmp_path / "images" / "labels.csv").unlink()
    shutil.copy(secret, tmp_path / "images" / "labels.csv")
    with pytest.raises(ValueError, match="not a labels.csv") as e:
        read_labels_csv(tmp_path / "images" / "labels.csv")
    assert "TOP-SECRET" not in str(e.value)
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(PathError, match="not a regular file"):
        read_labels_csv(tmp_path / "fifo.csv", inside=tmp_path)


@pytest.mark.slow
def test_labels_csv_symlink_to_a_secret_is_refused_and_never_echoed(edge_fx, tmp_path, src):
    images = tmp_path / "images"
    shutil.copytree(edge_fx / "images", images)
    secret = tmp_path / "secret.txt"
    secret.write_text("image,split,TOP-SECRET-LINE\n")
    (images / "labels.csv").unlink()
    (images / "labels.csv").symlink_to(secret)
    proc, _ = _edge("predict", src, images)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0 and "TOP-SECRET" not in out and "points outside" in out, out


def test_nul_in_a_labels_csv_image_path(edge_fx, tmp_path, src):
    images = tmp_path / "images"
    shutil.copytree(edge_fx / "images", images)
    with open(images / "labels.csv", "a") as f:
        f.write("bad\0name.png,test,audi,suv\n")
    from edge.runtime.labels import read_labels_csv
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    heads, table = read_labels_csv(images / "labels.csv")
    assert all("\0" not in str(p) for p in table)
    pred = Predictor(discover(src)["multihead.int8"]).predict_file("a\0b.png")
    assert not pred.ok and "NUL" in pred.error
    proc, _ = _edge("predict", src, images)
    assert proc.returncode == 0 and "accuracy over" in proc.stdout.decode()


def _remove_deep(deep: Path, depth: int) -> None:
    """Remove the nested folders bottom-up (shutil.rmtree, and so pytest's cleanup, recurse)."""
    for level in range(depth, -1, -1):
        d = Path(deep, *(["d"] * level))
        for child in d.iterdir() if d.exists() else ():
            if not child.is_dir() or child.is_symlink():
                child.unlink()
        if level:
            d.rmdir()


def test_folder_walk_is_iterative_and_skips_fifos_and_loops(edge_fx, tmp_path, src):
    from edge.runtime.labels import list_images
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    deep = tmp_path / "deep"
    try:
        d = deep
        deep.mkdir()
        for _ in range(1100):
            d = d / "d"
            d.mkdir()
        shutil.copy(next((edge_fx / "images").glob("*.png")), d / "x.png")
        os.mkfifo(deep / "fifo.png")
        (deep / "loop.png").symlink_to(deep / "loop.png")
        (deep / "up").symlink_to(deep)  # a folder loop: never followed
        assert list_images(deep) == [d / "x.png"]
        predictor = Predictor(discover(src)["multihead.int8"])
        for bad, why in ((deep / "fifo.png", "not a regular file"), (deep / "loop.png", "symlink loop")):
            t0 = time.perf_counter()
            pred = predictor.predict_file(bad)
            assert not pred.ok and why in pred.error and time.perf_counter() - t0 < 5
    finally:
        _remove_deep(deep, 1100)


@pytest.mark.slow
def test_deep_folders_fifo_and_symlink_loops(edge_fx, tmp_path, src):
    deep = tmp_path / "deep"
    try:
        _deep_folders_fifo_and_symlink_loops(edge_fx, deep, src)
    finally:
        _remove_deep(deep, 1100)


def _deep_folders_fifo_and_symlink_loops(edge_fx, deep, src):
    d = deep
    deep.mkdir()
    for _ in range(1100):  # one level at a time: Path.mkdir(parents=True) itself recurses
        d = d / "d"
        d.mkdir()
    png = next((edge_fx / "images").glob("*.png"))
    shutil.copy(png, d / "x.png")
    os.mkfifo(deep / "fifo.png")
    (deep / "loop.png").symlink_to(deep / "loop.png")
    proc, seconds = _edge("predict", src, deep, "--format", "jsonl")
    assert proc.returncode == 0 and len(proc.stdout.decode().splitlines()) == 1, proc.stderr.decode()[-1500:]
    for bad in (deep / "fifo.png", deep / "loop.png"):  # named on the command line: a per-file error
        proc, seconds = _edge("predict", src, bad, png, "--format", "jsonl")
        records = [json.loads(ln) for ln in proc.stdout.decode().splitlines()]
        assert proc.returncode == 1 and "error" in records[0] and "heads" in records[1], records
        assert "Traceback" not in proc.stderr.decode() and seconds < LIMIT_S


@pytest.mark.slow
def test_non_utf8_file_names_with_strict_utf8_stdout(edge_fx, tmp_path, src):
    images = tmp_path / "images"
    images.mkdir()
    png = next((edge_fx / "images").glob("*.png"))
    shutil.copy(png, os.path.join(os.fsencode(images), b"caf\xe9\n\x1b[31m.png"))
    for fmt in ("table", "csv", "jsonl"):
        proc, _ = _edge("predict", src, images, "--format", fmt, env_extra={"PYTHONIOENCODING": "utf-8:strict"})
        out = proc.stdout.decode("utf-8")
        if fmt == "jsonl":
            out = json.loads(out)["image"]
        assert proc.returncode == 0 and "caf\\xe9\\n\\x1b[31m.png" in out, (fmt, out, proc.stderr[-800:])
        assert "\x1b" not in out


def test_an_invoke_error_is_one_record_and_the_run_goes_on(edge_fx, src, monkeypatch):
    from edge.errors import ModelError
    from edge.runtime.model import Model
    from edge.runtime.predict import Predictor, iter_predictions
    from edge.runtime.variants import discover

    predictor = Predictor(discover(src)["multihead.int8"])
    real_run, calls = Model.run, []

    def flaky(self, pixels):
        calls.append(1)
        if len(calls) == 2:
            raise ModelError(f"{self.path}: invoke failed (Input tensor 47 lacks data)")
        return real_run(self, pixels)

    monkeypatch.setattr(Model, "run", flaky)
    preds = list(iter_predictions(predictor, sorted((edge_fx / "images").glob("*.png"))[:3]))
    assert [p.ok for p in preds] == [True, False, True] and "lacks data" in preds[1].error


def test_info_probes_in_a_limited_child(src, tmp_path):
    from edge.safety.probe import ProbeLimits, probe_in_child

    assert probe_in_child(src)["loads"] is True
    r = probe_in_child(src, limits=ProbeLimits(timeout_s=0.01))
    assert r["loads"] is False and "did not finish" in r["error"]
