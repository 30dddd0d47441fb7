"""Conversion: unit pieces, errors, the end-to-end run, incremental re-runs, interrupted writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from convert_fixtures import make_dataset, make_run, tiny_model  # noqa: E402
from env_checks import accept_unchecked_legacy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# -- pure pieces (no TensorFlow) ------------------------------------------------------------------


def test_calibration_is_stratified_over_combinations():
    from convert.data import calibration_records

    recs = [SimpleNamespace(labels=("a", "x"), i=i) for i in range(50)]
    recs += [SimpleNamespace(labels=("b", "y"), i=i) for i in range(3)]
    recs += [SimpleNamespace(labels=("c", "x"), i=i) for i in range(10)]
    chosen = calibration_records(tuple(recs), 12, seed=1)
    combos = [r.labels for r in chosen]
    assert len(chosen) == 12
    assert combos.count(("b", "y")) == 3  # a rare combination is taken whole
    assert {("a", "x"), ("c", "x")} <= set(combos)
    assert calibration_records(tuple(recs), 12, seed=1) == chosen  # seeded
    assert len(calibration_records(tuple(recs), 1000)) == 63


def test_map_outputs_reads_names_from_the_file():
    from convert.errors import ConvertError
    from convert.inspect import TensorInfo, map_outputs

    def t(name, k):
        return TensorInfo(name, "float32", (1, k), 0.0, 0)

    assert map_outputs({"make": 3, "type": 2}, {"make": t("make", 3), "type": t("type", 2)}) == {
        "make": "make", "type": "type"}
    assert map_outputs({"joint": 5}, {"output_0": t("output_0", 5)}) == {"joint": "output_0"}
    assert map_outputs({"make": 3, "type": 2}, {"output_0": t("output_0", 2), "output_1": t("output_1", 3)}) == {
        "make": "output_1", "type": "output_0"}
    with pytest.raises(ConvertError, match="cannot tell"):
        map_outputs({"a": 3, "b": 3}, {"o0": t("o0", 3), "o1": t("o1", 3)})


def test_verdict_thresholds():
    from convert.check import verdict

    def check(n, disagree, drop=0.0):
        return {"n": n, "heads": {"make": {"agreement": 1 - disagree / n, "disagreements": disagree,
                                           "drop": drop, "accuracy": 0.5, "keras_accuracy": 0.5 + drop}}}

    assert verdict("f", "float32", check(1000, 5)) == ([], [])
    errors, _ = verdict("f", "float32", check(1000, 6))
    assert errors and "make" in errors[0]
    assert verdict("f", "float32", check(20, 1))[0] == []  # one image allowed on a tiny test set
    assert verdict("f", "int8", check(100, 30, drop=0.01)) == ([], [])
    _, warnings = verdict("f", "int8", check(100, 30, drop=0.05))
    assert "5.0 points" in warnings[0]


# -- conversion ------------------------------------------------------------------------------------


def test_flex_op_is_a_one_line_error_naming_layer_and_op():
    import keras
    import tensorflow as tf

    from convert.errors import UnsupportedOpError
    from convert.tflite import convert_keras, exported

    class CumulativeProduct(keras.layers.Layer):
        def call(self, x):
            return tf.math.cumprod(x, axis=1)

    inp = keras.Input((8, 8, 3), name="image")
    x = CumulativeProduct(name="needs_flex")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, {"make": keras.layers.Dense(2, activation="softmax", name="make")(x)})
    with pytest.raises(UnsupportedOpError) as e:
        convert_keras(model, "float32")
    msg = str(e.value)
    assert "\n" not in msg and "Cumprod" in msg and "needs_flex" in msg and "Flex" in msg
    # The run's path: exported once, then int8 from the SavedModel.
    with exported(model) as saved, pytest.raises(UnsupportedOpError, match="Cumprod \\(layer 'needs_flex'\\)"):
        convert_keras(model, "int8", np.zeros((2, 8, 8, 3), np.uint8), saved_model_dir=saved)


def test_int8_file_takes_raw_uint8_pixels(tmp_path):
    from convert.inspect import op_versions, signature_info
    from convert.tflite import convert_keras

    model = tiny_model({"make": 3, "type": 2}, size=32)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    images[0] = 0
    images[1] = 255
    data = convert_keras(model, "int8", images)
    sig = signature_info(data)
    assert set(sig.outputs) == {"make", "type"}
    assert sig.inputs["image"].dtype == "uint8"
    assert sig.inputs["image"].scale == pytest.approx(1.0) and sig.inputs["image"].zero_point == 0
    assert {t.dtype for t in sig.outputs.values()} == {"uint8"}
    ops = op_versions(data)
    assert "CONV_2D" in ops and "DEQUANTIZE" not in ops


# -- whole runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("convert") / "data")


def _run(tmp_path, dataset, approaches=("multihead",), **kw):
    return make_run(tmp_path / "runs" / "r", dataset, approaches=approaches, **kw)


def test_run_errors_are_one_line(tmp_path, dataset):
    from convert.cli import main

    runner = CliRunner()
    empty = tmp_path / "empty"
    (empty / "models").mkdir(parents=True)
    make_run(tmp_path / "ok", dataset, approaches=())  # schema/config but no models
    res = runner.invoke(main, [str(tmp_path / "ok")])
    assert res.exit_code == 1 and "no models" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1

    (tmp_path / "ok" / "models" / "mystery.keras").write_bytes(b"x")
    res = runner.invoke(main, [str(tmp_path / "ok")])
    assert res.exit_code == 1 and "unknown approach 'mystery'" in res.output

    res = runner.invoke(main, [str(tmp_path / "ok"), "--precision", "float32,int4"])
    assert res.exit_code == 2 and "int4" in res.output


def test_no_calibration_images_is_an_error(tmp_path, dataset):
    import shutil

    from convert.errors import ConvertError
    from convert.run import convert_run

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    for p in data.glob("train_*.png"):
        p.write_bytes(b"not an image")
    run = _run(tmp_path, data)
    with pytest.raises(ConvertError) as e:
        convert_run(run, ["int8"], legacy=False)
    assert "\n" not in str(e.value) and "train" in str(e.value)


@pytest.mark.slow
def test_all_precisions_all_approaches_with_cards_and_checks(tmp_path, dataset):
    from convert.compat import legacy_python
    from convert.records import convert_key_errors
    from convert.run import convert_run
    from edge.contract.card_archive import read_card
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    run = _run(tmp_path, dataset, approaches=("multihead", "joint", "separate"))
    doc = convert_run(run, calibration=16)
    assert doc["errors"] == []
    on_disk = json.loads((run / "convert.json").read_text())
    assert on_disk["files"].keys() == doc["files"].keys()
    assert convert_key_errors(on_disk) == []  # the writer's keys are the ones convert.records names
    assert {"tensorflow", "keras", "converter", "ai-edge-litert"} <= set(doc["versions"])
    stems = ["multihead", "joint", "separate.make", "separate.type"]
    expected = {f"edge/{s}.{p}.tflite" for s in stems for p in ("float32", "float16", "dynamic", "int8")}
    assert set(doc["files"]) == expected
    legacy = legacy_python() is not None
    if not legacy:
        accept_unchecked_legacy("test_convert_run: runtime_compat of every file")
    for name, e in doc["files"].items():
        card = read_card(run / name)
        assert card.precision == e["precision"] and card.variant == e["variant"] == e["approach"]
        assert card.outputs == e["outputs"] and card.heads == tuple(e["heads"])
        assert e["bytes"] == (run / name).stat().st_size
        assert e["passed"] and e["check"]["n"] == 18
        for m in e["check"]["heads"].values():
            assert {"accuracy", "keras_accuracy", "drop", "agreement", "max_prob_diff"} <= set(m)
            if e["precision"] == "float32":
                assert m["agreement"] == 1.0 and m["max_prob_diff"] < 1e-4
        if card.approach == "joint":
            assert card.outputs["joint"] == "joint"  # read from the signature, dict key kept
        if e["precision"] == "int8":
            assert card.input.dtype == "uint8" and card.input.scale and card.input.zero_point is not None
            assert e["calibration_images"] == 16
        else:
            assert card.input.dtype == "float32"
        assert set(e["ops"]) <= {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE",
                                 "DEQUANTIZE", "MUL", "ADD"}
        compat = e["runtime_compat"]["tflite-runtime"]
        assert compat["status"] == ("ok" if legacy else "unchecked"), (name, compat)
        assert card.runtime_compat["tflite-runtime"]["status"] == compat["status"]
        assert set(card.runtime_compat["tflite-runtime"]) <= {"runtime", "loads", "status", "missing_ops", "error"}
    # Variants as the device runs them (separate = two files), through the edge Predictor.
    assert set(doc["variants"]) == {f"{a}.{p}" for a in ("multihead", "joint", "separate")
                                    for p in ("float32", "float16", "dynamic", "int8")}
    sep = doc["variants"]["separate.float32"]
    assert len(sep["files"]) == 2 and sep["check"]["joint_accuracy"] == sep["check"]["keras_joint_accuracy"]
    variants = discover(run / "edge")
    probs = Predictor(variants["multihead.int8"]).predict_array(np.zeros((1, 32, 32, 3), np.uint8))
    assert probs["make"].shape == (1, 3) and abs(float(probs["make"].sum()) - 1) < 0.02


def _resave_with_new_weights(path: Path) -> None:
    from artifacts.keras_io import load_model

    model = load_model(path)
    layer = model.get_layer("make")
    k, b = layer.get_weights()
    layer.set_weights([k[::-1].copy(), b])
    model.save(path)


@pytest.mark.slow
def test_incremental_and_force(tmp_path, dataset):
    from convert.run import convert_run

    run = _run(tmp_path, dataset, approaches=("multihead", "separate"))
    logs: list[str] = []
    convert_run(run, ["float32", "int8"], calibration=8, legacy=False, log=logs.append)
    assert sum(ln.startswith("converted") for ln in logs) == 6
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run / "edge").glob("*.tflite")}

    logs.clear()
    doc = convert_run(run, ["float32", "int8"], calibration=8, legacy=False, log=logs.append)
    assert not any(ln.startswith("converted") for ln in logs)
    assert sum(ln.startswith("unchanged") for ln in logs) == 6 and len(doc["files"]) == 6
    assert {p.name: p.stat().st_mtime_ns for p in (run / "edge").glob("*.tflite")} == mtimes

    _resave_with_new_weights(run / "models" / "separate.make.keras")
    logs.clear()
    convert_run(run, ["float32", "int8"], calibration=8, legacy=False, log=logs.append)
    assert sorted(ln.split()[1] for ln in logs if ln.startswith("converted")) == [
        "edge/separate.make.float32.tflite", "edge/separate.make.int8.tflite"]

    logs.clear()  # a changed setting (calibration size) reconverts the int8 files only
    convert_run(run, ["float32", "int8"], calibration=4, legacy=False, log=logs.append)
    assert sorted(ln.split()[1] for ln in logs if ln.startswith("converted")) == [
        "edge/multihead.int8.tflite", "edge/separate.make.int8.tflite", "edge/separate.type.int8.tflite"]

    logs.clear()
    convert_run(run, ["float32", "int8"], calibration=4, force=True, legacy=False, log=logs.append)
    assert sum(ln.startswith("converted") for ln in logs) == 6


_KILL_HARNESS = """
import os, sys, time
real_replace = os.replace
def slow_replace(src, dst, *a, **k):
    # Hold every finished .tflite temp file before it takes its final name: the test kills us here.
    if str(dst).endswith(".tflite"):
        open(os.environ["MARK"], "w").write(str(src))
        time.sleep(60)
    return real_replace(src, dst, *a, **k)
os.replace = slow_replace
from convert.cli import main
main([sys.argv[1], "--precision", "float32", "--no-legacy"], standalone_mode=True)
"""


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_partial_artifact(tmp_path, dataset):
    from convert.run import convert_run
    from edge.contract.card_archive import read_card

    run = _run(tmp_path, dataset)
    convert_run(run, ["int8"], calibration=4, legacy=False)  # an earlier, complete state
    before = json.loads((run / "convert.json").read_text())
    mark = tmp_path / "mark"
    env = {**os.environ, "MARK": str(mark), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _KILL_HARNESS, str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not mark.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert mark.exists(), "the conversion never reached its write"
        tmp_file = Path(mark.read_text())
        assert tmp_file.exists() and tmp_file.name.endswith(".tmp")  # the write is in flight
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing half-written under a real name: the float32 file does not exist, the rest is intact.
    assert not (run / "edge" / "multihead.float32.tflite").exists()
    assert json.loads((run / "convert.json").read_text()) == before
    for f in (run / "edge").glob("*.tflite"):
        read_card(f)  # the card's sha256 covers the whole model: a torn file fails here
    # Re-running completes, cleans the stray temporary file and keeps the finished int8 file.
    logs: list[str] = []
    doc = convert_run(run, ["float32", "int8"], calibration=4, legacy=False, log=logs.append)
    assert not tmp_file.exists() and not list((run / "edge").glob(".*.tmp"))
    assert any("removed a temporary file" in ln for ln in logs)
    assert "unchanged  edge/multihead.int8.tflite" in logs
    assert set(doc["files"]) == {"edge/multihead.float32.tflite", "edge/multihead.int8.tflite"}
