"""polyhead-edge end to end, in subprocesses, on TF 2.21-made files; and proof that the edge never
imports TensorFlow, Keras or any host package (the bench's worker processes included)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edge_fixtures import HEADS, edge_fx_fixture  # noqa: F401

from edge.bench.records import bench_key_errors
from edge.contract.card_archive import read_card, write_model

BLOCKED = ("tensorflow", "keras", "tf_keras", "scipy", "matplotlib", "datasets", "train", "convert", "report")
REPO = Path(__file__).resolve().parents[1]

# Installed through sitecustomize in every Python the CLI starts (PYTHONPATH is inherited by the bench
# workers): importing a blocked package is logged and fails.
GUARD = f"""
import sys
BLOCKED = {BLOCKED!r}
LOG = {{log!r}}
class _Guard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(LOG, "a") as f:
                f.write(name + "\\n")
            raise ImportError("blocked by the edge test: " + name)
        return None
sys.meta_path.insert(0, _Guard())
"""


def _edge(*args, env_extra=None, cwd=None, check=None):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or REPO, timeout=300)
    if check is not None:
        assert proc.returncode == check, proc.stderr[-2000:]
    return proc


@pytest.fixture()
def guarded(tmp_path):
    site = tmp_path / "guard"
    site.mkdir()
    log = tmp_path / "imports.log"
    (site / "sitecustomize.py").write_text(GUARD.format(log=str(log)))
    pythonpath = os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": pythonpath}, log


def _two_variants(edge_fx, tmp_path) -> Path:
    d = tmp_path / "deploy"
    d.mkdir()
    for name in ("multihead.int8.tflite", "separate.make.float32.tflite", "separate.type.float32.tflite"):
        shutil.copy(edge_fx / "models" / name, d)
    return d


def test_cli_never_imports_tensorflow_or_host_packages(edge_fx, tmp_path, guarded):
    env, log = guarded
    deploy = _two_variants(edge_fx, tmp_path)
    _edge("info", deploy, env_extra=env, check=0)
    _edge("predict", deploy, edge_fx / "images", "--variant", "multihead.int8", "--format", "jsonl",
          env_extra=env, check=0)
    out = tmp_path / "bench.json"
    _edge("bench", deploy, "--images", edge_fx / "images", "--runs", "3", "--warmup", "1", "--rounds", "1",
          "--min-time", "0", "--out", out, env_extra=env, check=0)
    assert json.loads(out.read_text())["variants"]["multihead.int8"].get("error") is None
    # The guard works: it would have caught an import.
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env={**os.environ, **env},
                           capture_output=True, text=True)
    assert check.returncode != 0 and log.read_text().splitlines() == ["tensorflow"]


def test_help_and_module_entry_points():
    proc = _edge("--help", check=0)
    for cmd in ("info", "predict", "bench"):
        assert cmd in proc.stdout
    script = Path(sys.executable).parent / "polyhead-edge"
    if not script.exists():
        pytest.skip(f"no polyhead-edge console script beside {sys.executable} (the package is not pip-installed here)")
    assert subprocess.run([script, "--help"], capture_output=True).returncode == 0


def test_info(edge_fx):
    proc = _edge("info", edge_fx / "models", check=0)
    assert "separate.float32: 2 file(s)" in proc.stdout and "loads here: yes" in proc.stdout
    assert "joint -> joint" in proc.stdout and "uint8 scale" in proc.stdout
    d = json.loads(_edge("info", edge_fx / "models", "--json", check=0).stdout)
    assert sorted(d["variants"]) == ["joint.float32", "joint.int8", "multihead.float32", "multihead.int8",
                                     "separate.float32"]
    assert d["files"]["multihead.int8.tflite"]["signature"]["outputs"]["make"]["dtype"] == "uint8"


def test_info_says_when_a_file_does_not_load(edge_fx, tmp_path):
    card = read_card(edge_fx / "models" / "multihead.float32.tflite")
    card = card.with_updates(runtime_compat={"tflite-runtime 2.14.0": {"loads": False, "missing_ops": ["X v9"]}})
    write_model(tmp_path / "bad.tflite", b"TFL3" + bytes(100), card)
    proc = _edge("info", tmp_path / "bad.tflite", check=0)
    assert "loads here: NO" in proc.stdout and "does NOT load (missing: X v9)" in proc.stdout


def test_info_without_a_runtime_still_shows_the_cards(edge_fx):
    proc = _edge("info", edge_fx / "models" / "multihead.int8.tflite", env_extra={"POLYHEAD_RUNTIME": "no-such"},
                 check=0)
    assert "runtime here: none" in proc.stdout and "variant multihead.int8" in proc.stdout
    assert "loads here: NO: unknown runtime" in proc.stdout


def test_predict_formats_accuracy_and_bad_images(edge_fx, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(edge_fx / "images", images)
    models = edge_fx / "models"
    # Several variants and none named: multihead, int8 first, and the command says so.
    proc = _edge("predict", models, images, "--format", "jsonl", check=0)
    assert "several variants found, using multihead.int8" in proc.stderr and "Traceback" not in proc.stderr
    assert {json.loads(line)["variant"] for line in proc.stdout.splitlines()} == {"multihead.int8"}
    table = _edge("predict", models, images, "--variant", "joint.int8", "--top-k", "2", check=0).stdout
    assert "make:" in table and "accuracy over 6 labelled images" in table
    jl = _edge("predict", models, images, "--variant", "multihead.float32", "--format", "jsonl", "--threads", "2",
               check=0)
    records = [json.loads(line) for line in jl.stdout.splitlines()]
    assert len(records) == 6 and set(records[0]["heads"]) == set(HEADS)
    assert "accuracy over 6" in jl.stderr
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xffgarbage")
    proc = _edge("predict", models, images, "--variant", "separate", "--format", "csv", "--top-k", "3", check=1)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert len(rows) == 7 and sum(bool(r["error"]) for r in rows) == 1
    assert rows[-1]["make"] and len(rows[-1]["make_top_k"].split(";")) == 3
    assert "1 of 7 images failed" in proc.stderr


def test_predict_decodes_among_a_catalogue_and_refuses_a_bad_one(edge_fx, tmp_path):
    import math

    from edge_fixtures import MAKES, TYPES

    images, models = edge_fx / "images", edge_fx / "models"
    listed = [(m, t) for m in MAKES for t in TYPES if (m, t) != ("bmw", "suv")][::2]
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("type,make\n" + "".join(f"{t},{m}\n" for m, t in listed) + "sedan,unknown-make\n")
    proc = _edge("predict", models, images, "--variant", "multihead.float32", "--format", "jsonl", "--top-k", "4",
                 "--catalogue", catalogue, check=0)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 6
    for r in records:
        # Every class's probability is in top_k (4 makes, 3 types): the best listed pair, by hand.
        p = {h: dict(r["heads"][h]["top_k"]) for h in HEADS}
        best = max(listed, key=lambda c: math.log(max(p["make"][c[0]], 1e-30)) + math.log(max(p["type"][c[1]], 1e-30)))
        assert (r["catalogue"]["make"], r["catalogue"]["type"]) == best
    assert "joint decoded among the catalogue" in proc.stderr
    table = _edge("predict", models, images, "--variant", "multihead.int8", "--catalogue", catalogue, check=0).stdout
    assert table.count("catalogue: ") == 6
    rows = list(csv.DictReader(io.StringIO(_edge("predict", models, images, "--variant", "separate", "--format", "csv",
                                                 "--catalogue", catalogue, check=0).stdout)))
    assert all(tuple(r["catalogue"].split("/")) in listed for r in rows)
    # A catalogue without a column for one of the model's heads: one line naming the file, exit 1.
    bad = tmp_path / "bad.csv"
    bad.write_text("make,colour\naudi,red\n")
    proc = _edge("predict", models, images, "--catalogue", bad, check=1)
    assert "bad.csv: no column for head 'type'" in proc.stderr and "Traceback" not in proc.stderr


def _expected_accuracy(deploy: Path, vid: str, images: Path) -> dict:
    """The accuracy record bench should write, counted here from in-process predictions."""
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    predictor = Predictor(discover(deploy)[vid])
    rows = list(csv.DictReader((images / "labels.csv").open()))
    right = {h: 0 for h in HEADS}
    joint = 0
    for row in rows:
        labels = predictor.predict_file(images / row["image"]).heads
        hits = {h: labels[h].label == row[h] for h in HEADS}
        for h in HEADS:
            right[h] += hits[h]
        joint += all(hits.values())
    n = len(rows)  # every fixture row has both heads' labels
    return {"heads": {h: right[h] / n for h in HEADS}, "heads_n": {h: n for h in HEADS}, "joint": joint / n,
            "joint_n": n, "n": n}


def test_bench_json_csv_and_a_failing_variant(edge_fx, tmp_path):
    deploy = _two_variants(edge_fx, tmp_path)
    card = read_card(edge_fx / "models" / "joint.float32.tflite")
    write_model(deploy / "joint.float32.tflite", b"TFL3" + bytes(300), card)  # card fine, flatbuffer not
    out, out_csv = tmp_path / "b.json", tmp_path / "b.csv"
    proc = _edge("bench", deploy, "--images", edge_fx / "images", "--runs", "5", "--warmup", "1", "--rounds", "2",
                 "--min-time", "0", "--out", out, "--csv", out_csv, "--duration", "1", check=0)
    assert "[3/3]" in proc.stderr and "multihead.int8" in proc.stdout
    b = json.loads(out.read_text())
    assert bench_key_errors(b) == []  # every key the writer wrote is one edge.bench.records names
    assert b["threads"] == 1 and b["runtime"] in ("ai-edge-litert", "tflite-runtime")
    bad = b["variants"]["joint.float32"]
    assert bad["errors"] == 2 and bad["failed_rounds"] == 2 and "refused by the model check (flatbuffer)" in bad["error"]
    for vid in ("multihead.int8", "separate.float32"):
        r = b["variants"][vid]
        assert r.get("error") is None, r
        approach, precision = vid.split(".")
        assert (r["variant"], r["approach"], r["precision"]) == (approach, approach, precision)
        on_disk = sorted(deploy.glob(f"{approach}.*{precision}.tflite"))
        assert sorted(r["files"]) == [f.name for f in on_disk]
        assert r["bytes"] == sum(f.stat().st_size for f in on_disk)
        assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["images_per_s"] > 0 and r["errors"] == 0
        for key in ("interpreter_ms", "file_to_labels_ms"):
            stats = r[key]
            assert set(stats) == {"mean", "p50", "p90", "p99", "std"}
            assert 0 < stats["p50"] <= stats["p90"] <= stats["p99"] and stats["mean"] > 0 and stats["std"] >= 0
        assert r["accuracy"] == _expected_accuracy(deploy, vid, edge_fx / "images")
        assert "rss_slope_mb_per_min" in r and r["duration_images"] > 0 and r["duration_errors"] == 0
        assert 0 < r["peak_rss_mb"] < 500
    assert len(b["variants"]["separate.float32"]["files"]) == 2
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["variant_id"] for r in rows] == ["joint.float32", "multihead.int8", "separate.float32"]
    assert rows[1]["interpreter_ms_p50"] and rows[1]["accuracy_make"]


def test_bench_without_images_uses_random_pixels(edge_fx, tmp_path):
    out = tmp_path / "b.json"
    _edge("bench", edge_fx / "models" / "multihead.float32.tflite", "--runs", "3", "--warmup", "0", "--rounds", "1",
          "--min-time", "0", "--out", out, check=0)
    r = json.loads(out.read_text())["variants"]["multihead.float32"]
    assert r["file_to_labels_ms"] is None and r["accuracy"] is None and r["interpreter_ms"]["p50"] > 0


def test_bench_unwritable_out_is_one_line(edge_fx, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = _edge("bench", edge_fx / "models" / "multihead.float32.tflite", "--runs", "1", "--warmup", "0",
                 "--rounds", "1", "--min-time", "0", "--out", blocker / "b.json", check=1)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: cannot write") and "Traceback" not in proc.stderr


def test_known_errors_are_one_line(tmp_path):
    (tmp_path / "x.tflite").write_bytes(b"junk")
    proc = _edge("predict", tmp_path / "x.tflite", tmp_path, check=1)
    assert proc.stderr.startswith("Error: ") and "no model card" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_long_run_keeps_rss_flat(edge_fx, tmp_path):
    """Issue 7: thousands of images through one process, RSS sampled over time, errors counted."""
    out = tmp_path / "soak.json"
    _edge("bench", edge_fx / "models" / "multihead.int8.tflite", "--images", edge_fx / "images", "--runs", "5",
          "--warmup", "1", "--rounds", "1", "--min-time", "0", "--duration", "6", "--out", out, check=0)
    r = json.loads(out.read_text())["variants"]["multihead.int8"]
    assert r["duration_images"] >= 1000 and r["duration_errors"] == 0 and r["errors"] == 0
    assert r["rss_samples"] >= 6
    assert abs(r["rss_slope_mb_per_min"]) < 3.0, r  # a leak of 1 kB per image would be ~10 MB/min here
