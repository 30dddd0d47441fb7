"""Beyond one machine's memory: the sharded feature store, its resume and old form, and workers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train_slow import _free_ports
from train_fixtures import write_folder

from train.featurestore import FeatureStore, ShardedRows

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(backbone="tiny_cnn", image_size=(32, 32), batch_size=8, epochs=2, learning_rate=3e-3, weights="none",
            freeze_base=True, warmup_epochs=0, fine_tune_learning_rate=None, approaches=("multihead",), verbose=0,
            compose="none")  # plain heads: these tests are about the feature store


def test_store_shards_resume_and_index_like_one_array(tmp_path):
    store = FeatureStore(tmp_path, "f" * 40, shard_rows=4)
    feats = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    store.prepare_split("train", 10)
    for shard in (0, 2):  # an interrupted extraction: shard 1 never written
        a, b = store.shard_range(shard, 10)
        store.write_shard("train", shard, feats[a:b], np.ones(b - a, bool), [f"k{i}" for i in range(a, b)])
    assert store.missing_shards("train", 10) == [1]
    store.write_shard("train", 1, feats[4:8], np.array([True, False, True, True]))
    got, ok = store.read_split("train", 10)
    assert isinstance(got, ShardedRows) and got.shape == (10, 3) and ok.tolist().count(False) == 1
    assert np.array_equal(np.asarray(got), feats) and np.array_equal(got[[9, 0, 5]], feats[[9, 0, 5]])
    assert np.array_equal(got[ok], feats[ok]) and np.array_equal(got[3:6], feats[3:6]) and got[-1].tolist() == [27, 28, 29]
    assert set(store.keyed()) == {f"k{i}" for i in (0, 1, 2, 3, 8, 9)}  # shard 1 has no keys, row 5 failed
    # Another row count (the dataset changed under the run): its shards are dropped, computed again.
    store.prepare_split("train", 11)
    assert store.missing_shards("train", 11) == [0, 1, 2]


@pytest.mark.slow
def test_two_workers_extract_their_own_shards_and_the_heads_match_one_worker(tmp_path, monkeypatch, caplog):
    from train.fit import TrainConfig, load_model, run_training

    data = write_folder(tmp_path / "data", n=48, size=32)
    monkeypatch.setenv("POLYHEAD_FEATURE_SHARD_ROWS", "8")
    run_training(TrainConfig(data=str(data), out=str(tmp_path / "one"), **ARGS))

    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})}
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "train", "--data", str(data), "--out", str(two), "--backbone", "tiny_cnn",
           "--image-size", "32", "--batch-size", "8", "--epochs", "2", "--learning-rate", "0.003", "--weights", "none",
           "--freeze-base", "--warmup-epochs", "0", "--approach", "multihead", "--verbose", "0",
           "--strategy", "multiworker"]
    # Worker 1 first, alone: it writes exactly its shards (every second one) and leaves.
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    store = next((two / "features").iterdir())
    written = sorted(str(p.relative_to(store)) for p in store.glob("*/[0-9]*[0-9].npy"))
    splits = [s for s in ("train", "val", "test", "test_unseen") if (store / s).is_dir()]
    sizes = {s: json.loads((store / s / "rows.json").read_text())["rows"] for s in splits}
    todo = [f"{s}/{i:05d}.npy" for s in splits for i in range(-(-sizes[s] // 8))]
    assert written == sorted(todo[1::2]) and not (two / "train.json").exists()
    # The chief: its own shards, then the heads, once, on every worker's features.
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    record = run_training(TrainConfig(data=str(data), out=str(two), strategy="multiworker", **ARGS))
    fingerprint = json.loads((store / "store.json").read_text())["fingerprint"]
    assert (tmp_path / "one" / "features" / store.name).is_dir()
    for s in splits:
        a, ok_a = FeatureStore(tmp_path / "one", fingerprint).read_split(s, sizes[s])
        b, ok_b = FeatureStore(two, fingerprint).read_split(s, sizes[s])
        assert np.array_equal(ok_a, ok_b) and np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    m1, m2 = load_model(tmp_path / "one" / "models" / "multihead.keras"), load_model(two / "models" / "multihead.keras")
    for head in ("make", "type"):
        for w1, w2 in zip(m1.get_layer(head).get_weights(), m2.get_layer(head).get_weights(), strict=True):
            assert np.allclose(w1, w2, atol=1e-5), head
    one_json = json.loads((tmp_path / "one" / "train.json").read_text())
    assert _flat(record["variants"]["multihead"]["metrics"]) == pytest.approx(
        _flat(one_json["variants"]["multihead"]["metrics"]), abs=1e-4)


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": float(v)})
    return out


@pytest.mark.slow
def test_interrupted_extraction_resumes_and_an_old_npz_store_says_so(tmp_path, monkeypatch, caplog):
    from train.features import save_features
    from train.fit import TrainConfig, run_training

    data = write_folder(tmp_path / "data", n=48, size=32)
    monkeypatch.setenv("POLYHEAD_FEATURE_SHARD_ROWS", "8")
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), **ARGS)
    first = run_training(cfg)
    store = next((tmp_path / "run" / "features").iterdir())
    fingerprint = json.loads((store / "store.json").read_text())["fingerprint"]
    # Interrupted: the last shard of train never written, models gone; the run extracts only that shard.
    shards = sorted((store / "train").glob("[0-9]*[0-9].npy"))
    shards[-1].unlink()
    for p in (tmp_path / "run" / "models").glob("*"):
        p.unlink()
    for p in (tmp_path / "run" / "checkpoints").rglob("*.json"):
        p.unlink()
    again = run_training(cfg)
    rows = json.loads((store / "train" / "rows.json").read_text())["rows"]
    assert again["feature_extraction"]["backbone_image_passes"] == rows - 8 * (len(shards) - 1)
    assert again["variants"]["multihead"]["metrics"] == first["variants"]["multihead"]["metrics"]
    # A run folder with only the old single-file store: computed again, with one line saying so.
    import shutil

    shutil.rmtree(store)
    save_features(tmp_path / "run", fingerprint, ["k"], np.zeros((1, 4), np.float32))
    for p in (tmp_path / "run" / "models").glob("*"):
        p.unlink()
    with caplog.at_level(logging.INFO):
        third = run_training(cfg)
    assert sum("old single-file feature store" in r.getMessage() for r in caplog.records) == 1
    assert third["variants"]["multihead"]["metrics"] == first["variants"]["multihead"]["metrics"]


@pytest.mark.slow
def test_fine_tune_streams_from_files_and_skips_a_broken_image(tmp_path, caplog):
    from datasets.pipeline import StreamedImages
    from train.data import open_arrays
    from train.fit import TrainConfig, run_training

    data = write_folder(tmp_path / "data", n=24, size=32)
    (data / "images" / "0000.png").write_bytes(b"not a png")
    _, splits, _ = open_arrays(data, (32, 32))
    assert isinstance(splits["train"].images, StreamedImages)  # nothing decoded until a batch is read
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), **{**ARGS, "freeze_base": False, "epochs": 1})
    with caplog.at_level(logging.WARNING):
        record = run_training(cfg)
    assert sum(record["dataset"]["skipped"].values()) == 1 and "0000.png" in caplog.text
    first_split = (data / "labels.csv").read_text().splitlines()[1].split(",")[1]
    assert record["dataset"]["skipped"][first_split] == 1
    assert not (tmp_path / "run" / "features").exists()  # every layer trains: no feature store


def test_bench_scale_keep_measures_only_the_missing_sizes(tmp_path, monkeypatch):
    # An hours-long benchmark finished in parts: a size that trained with the same settings is kept,
    # a failed one and a missing one are run again; another backbone's record keeps nothing.
    from click.testing import CliRunner

    import train.bench_scale as bs

    for n in (6000, 18000):
        d = tmp_path / "data" / (f"synth-6000-x{n}" if n != 6000 else "synth-6000")
        d.mkdir(parents=True)
        (d / "labels.csv").write_text("image,split,make,type\n")
    settings = {"backbone": "tiny_cnn", "weights": "none", "image_size": 64, "epochs": 2}
    old = {**settings, "extraction": {"streamed_over_in_memory": 1.0},
           "train_peak_rss": [{"images": 6000, "returncode": 0, "peak_rss_mb": 900.0},
                              {"images": 18000, "returncode": -15, "peak_rss_mb": 950.0}]}
    out = tmp_path / "scale.json"
    ran: list[str] = []
    monkeypatch.setattr(bs, "_run", lambda cmd, log: ran.append(cmd[cmd.index("--data") + 1]) or
                        {"returncode": 0, "wall_s": 1.0, "peak_rss_mb": 910.0})
    args = ["--out", str(out), "--sizes", "6000,18000", "--image-size", "64", "--backbone", "tiny_cnn", "--weights",
            "none", "--data-root", str(tmp_path / "data"), "--runs-root", str(tmp_path / "runs"), "--skip-convert",
            "--keep"]
    out.write_text(json.dumps(old))
    result = CliRunner().invoke(bs.main, args)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert [Path(r).name for r in ran] == ["synth-6000-x18000"]
    assert [r["peak_rss_mb"] for r in record["train_peak_rss"]] == [900.0, 910.0]
    assert record["extraction"] == old["extraction"] and record["rss_growth_kb_per_image"] == round(10 * 1024 / 12000, 2)
    out.write_text(json.dumps({**old, "backbone": "efficientnet_lite0"}))
    ran.clear()
    result = CliRunner().invoke(bs.main, [*args, "--rounds", "0"])
    assert "keeps nothing" in result.output and len(ran) == 2
