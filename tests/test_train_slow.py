"""train/: every backbone end to end, interruption and resume, distribution strategies (slow)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_arrays, write_folder  # noqa: E402

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from artifacts.keras_io import load_model  # noqa: E402
from train.backbones import backbone_spec, list_backbones  # noqa: E402
from train.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "train_worker.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def _size(name: str) -> int:
    return max(64 if name == "alexnet" else 32, backbone_spec(name).min_size)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n == "tiny_cnn" else pytest.mark.slow) for n in list_backbones()]
)
def test_every_backbone_builds_trains_saves_loads_all_approaches(name, tmp_path):
    """Done-when: every registered backbone, all three approaches: a train step, save, load back.

    Eager steps (no tf.function tracing, no XLA): compiling EfficientNet's train step costs minutes
    on 2 cores and tests nothing of ours.
    """
    schema, data = make_arrays(n=16, size=_size(name))
    x = data["train"].images[:2].astype("float32")
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    for approach in ("multihead", "joint", "separate"):
        for model_name, m in build_model(approach, name, schema, (x.shape[1], x.shape[2])).items():
            targets = {k: v[:2] for k, v in data["train"].targets(tuple(m.output.keys())).items()}
            head = m.get_layer(next(iter(targets)))
            before = [w.copy() for w in head.get_weights()]
            opt = keras.optimizers.SGD(0.1)
            with tf.GradientTape() as tape:
                out = m(x, training=True)
                loss = sum(loss_fn(targets[k], out[k]) for k in targets)
            opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables), m.trainable_variables, strict=True))
            assert any(not np.array_equal(a, b) for a, b in zip(before, head.get_weights(), strict=True))
            path = tmp_path / f"{model_name}.keras"
            m.save(str(path))
            back = load_model(path)
            want, got = m(x, training=False), back(x, training=False)
            for k in want:
                np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), atol=1e-5)
        keras.backend.clear_session()


@pytest.mark.slow
def test_small_training_learns_every_head_well_above_chance(tmp_path):
    from click.testing import CliRunner

    from train.__main__ import main

    data = write_folder(tmp_path / "data", n=160, size=32, seed=3)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["--data", str(data), "--out", str(out), "--backbone", "tiny_cnn",
                                  "--image-size", "32", "--epochs", "6", "--batch-size", "16",
                                  "--learning-rate", "0.005", "--verbose", "0", "--protocol", "scratch"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "train.json").read_text())
    for name, v in rec["variants"].items():
        for head, m in v["metrics"]["test"]["heads"].items():
            assert m["accuracy"] >= 0.7, (name, head, m)  # chance is 1/3
    assert set(rec["variants"]["joint"]["metrics"]) == {"val", "test", "test_unseen"}


def _cli(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(WORKER), "1", "--data", str(data), "--out", str(out), "--backbone", "tiny_cnn",
            "--image-size", "32", "--batch-size", "8", "--approach", "multihead", "--learning-rate", "0.003",
            "--verbose", "0", "--protocol", "scratch", *extra]


def _test_metrics(out: Path) -> dict:
    return json.loads((out / "train.json").read_text())["variants"]["multihead"]["metrics"]["test"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    data = write_folder(tmp_path / "data", n=96, size=32, seed=1)
    epochs = "12"
    ref = tmp_path / "ref"
    subprocess.run(_cli(ref, data, "--epochs", epochs), env=ENV, check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(out, data, "--epochs", epochs), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoints" / "multihead" / "epoch-0002.keras"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "train.json").exists(), "the run finished before it could be killed"
    finished = sorted((out / "checkpoints" / "multihead").glob("epoch-*.keras"))
    assert finished  # a kill may leave a temp file behind, never a half-written final name
    load_model(finished[-1])

    r = subprocess.run(_cli(out, data, "--resume"), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming after epoch" in r.stderr
    rows = (out / "logs" / "multihead.csv").read_text().strip().splitlines()
    assert [line.split(",")[0] for line in rows[1:]] == [str(e) for e in range(1, int(epochs) + 1)]
    # Same seed, same batches per epoch, op determinism on: resuming is not an approximation of the
    # uninterrupted run, it is the same run, so the bound is tight (different seeds differ by far more).
    a, b = _test_metrics(ref), _test_metrics(out)
    for head in a["heads"]:
        assert a["heads"][head]["accuracy"] == b["heads"][head]["accuracy"], (a, b)
        assert abs(a["heads"][head]["loss"] - b["heads"][head]["loss"]) <= 1e-3, (a, b)
    assert a["joint_accuracy"] == b["joint_accuracy"]
    load_model(out / "models" / "multihead.keras")


@pytest.mark.slow
def test_sigint_stops_cleanly_after_saving(tmp_path):
    data = write_folder(tmp_path / "data", n=160, size=32, seed=2)
    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(out, data, "--epochs", "40"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "multihead" / "epoch-0002.keras"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "continue with --resume" in err and "Traceback" not in err
    finished = sorted((out / "checkpoints" / "multihead").glob("epoch-*.keras"))
    assert finished
    load_model(finished[-1])  # the checkpoint is complete
    assert not list(out.rglob("*.tmp*"))


# Long enough to converge on the tiny set, so the comparison is not dominated by early-training noise.
STRATEGY_ARGS = ("--epochs", "6", "--batch-size", "16", "--learning-rate", "0.005")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


# Measured noise of a distributed run against one process on this fixture (BatchNorm sees each
# replica's half batch, and the gradient reduction order differs, so the runs are not bit-equal):
# measured 2026-11-30, mirrored and multiworker alike: make accuracy equal and loss 0.012 apart,
# type accuracy 0.026 apart (one image of the 38-image test split) and loss 0.105 apart. The bounds
# are the documented 0.1 / 0.2.
STRATEGY_ACCURACY_BOUND = 0.1
STRATEGY_LOSS_BOUND = 0.2


@pytest.fixture(scope="module")
def strategy_reference(tmp_path_factory) -> tuple[Path, dict]:
    """One single-process run shared by the mirrored and multiworker tests (one training, not two)."""
    root = tmp_path_factory.mktemp("strategy")
    data = write_folder(root / "data", n=160, size=32, seed=4)
    subprocess.run(_cli(root / "one", data, *STRATEGY_ARGS), env=ENV, check=True, capture_output=True, timeout=300)
    return data, _test_metrics(root / "one")


def _assert_close_to_reference(reference: dict, got: dict) -> None:
    for head in reference["heads"]:
        a, b = reference["heads"][head], got["heads"][head]
        assert abs(a["accuracy"] - b["accuracy"]) <= STRATEGY_ACCURACY_BOUND, (head, reference, got)
        assert abs(a["loss"] - b["loss"]) <= STRATEGY_LOSS_BOUND, (head, reference, got)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_default(strategy_reference, tmp_path):
    data, reference = strategy_reference
    two = tmp_path / "two"
    cmd = _cli(two, data, *STRATEGY_ARGS, "--strategy", "mirrored")
    cmd[2] = "2"
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((two / "train.json").read_text())
    assert rec["strategy"] == "mirrored" and rec["replicas"] == 2
    _assert_close_to_reference(reference, _test_metrics(two))


@pytest.mark.slow
def test_multiworker_two_processes_match_one_worker(strategy_reference, tmp_path):
    """Two workers on localhost (TF_CONFIG) against the one-process reference."""
    data, reference = strategy_reference
    multi = tmp_path / "multi"
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(_cli(multi, data, *STRATEGY_ARGS, "--strategy", "multiworker"), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    rec = json.loads((multi / "train.json").read_text())
    assert rec["strategy"] == "multiworker" and rec["replicas"] == 2
    _assert_close_to_reference(reference, _test_metrics(multi))
