"""make all's reuse rules and make bench's CPU peak, on files written here (no TensorFlow)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import train_json

from edge.io import file_sha256
from report.benchmarks.suite import cpu_peak, ratio_table
from report.pipeline import (
    PipelineError,
    PipelineSettings,
    bench_done,
    conversion_done,
    data_ready,
    prepare_bench_images,
    training_done,
)


def _touch(path: Path, mtime: float | None = None, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _settings(tmp_path: Path, **kw) -> PipelineSettings:
    base = {"data": tmp_path / "data", "run": tmp_path / "run", "backbone": "mobilenet_v2", "image_size": 96,
            "epochs": 2, "seed": 0, "weights": "none", "protocol": "scratch"}
    base.update(kw)
    return PipelineSettings(**base)


def _trained_run(tmp_path: Path) -> PipelineSettings:
    s = _settings(tmp_path)
    s.run.mkdir(parents=True)
    (s.run / "train.json").write_text(json.dumps(train_json()))
    (s.run / "config.json").write_text(json.dumps({"data": str(s.data), "backbone": "mobilenet_v2",
                                                   "image_size": [96, 96], "epochs": 2, "seed": 0,
                                                   "weights": "none"}))
    for name in ("multihead", "joint", "separate.make", "separate.type"):
        _touch(s.run / "models" / f"{name}.keras", time.time() - 100)
    return s


def test_data_is_reused_when_labels_exist(tmp_path: Path) -> None:
    assert not data_ready(tmp_path)
    _touch(tmp_path / "labels.csv")
    assert data_ready(tmp_path)


def test_training_reused_only_with_the_same_settings(tmp_path: Path) -> None:
    s = _trained_run(tmp_path)
    assert training_done(s) == (True, "train.json has every approach with these settings")
    done, why = training_done(_settings(tmp_path, epochs=3))
    assert not done and "epochs" in why
    done, why = training_done(_settings(tmp_path, backbone="squeezenet"))
    assert not done and "backbone" in why
    (s.run / "models" / "joint.keras").unlink()
    assert not training_done(s)[0]


def _converted(s: PipelineSettings, precisions: tuple[str, ...]) -> dict[str, Any]:
    """convert.json as a conversion of the run's models at ``precisions`` writes it (the keys freshness reads)."""
    from convert.tflite import settings_for
    from edge.contract.schema import LabelSchema
    from edge.io import file_sha256
    from edge.runtime.interpreter import dist_version

    LabelSchema.from_labels(("make", "type"), [("Audi", "SUV"), ("BMW", "sedan")]).save(s.run / "schema.json")
    files = {}
    for name in ("multihead", "joint", "separate.make", "separate.type"):
        source = s.run / "models" / f"{name}.keras"
        for precision in precisions:
            rel = f"edge/{name}.{precision}.tflite"
            _touch(s.run / rel, time.time() - 50, text=f"{name} {precision}")
            files[rel] = {"source": {"sha256": file_sha256(source)}, "settings": settings_for(precision, 256).to_dict(),
                          "tensorflow": dist_version("tensorflow"), "sha256": file_sha256(s.run / rel), "check": {}}
    doc = {"files": files}
    (s.run / "convert.json").write_text(json.dumps(doc))
    return doc


def test_conversion_is_done_when_convert_would_keep_every_file(tmp_path: Path) -> None:
    """convert's own answer: hashes of the sources and files, the settings and the converter (not file times)."""
    s = _trained_run(tmp_path)
    assert conversion_done(s.run, ("float32", "int8"))[0] is False  # no schema.json, no convert.json
    doc = _converted(s, ("float32", "int8"))
    assert conversion_done(s.run, ("float32", "int8")) == (True, "every model converted at every precision")
    os.utime(s.run / "models" / "joint.keras")  # touched, not changed: still done
    assert conversion_done(s.run, ("float32", "int8"))[0]
    assert conversion_done(s.run, ("float32", "float16")) == (
        False, "edge/joint.float16.tflite is not the conversion of models/joint.keras with these settings")
    _touch(s.run / "models" / "joint.keras", text="retrained")
    done, why = conversion_done(s.run, ("float32", "int8"))
    assert not done and why.startswith("edge/joint.float32.tflite is not the conversion of models/joint.keras"), why
    doc["files"]["edge/joint.float32.tflite"]["source"]["sha256"] = file_sha256(s.run / "models" / "joint.keras")
    doc["files"]["edge/joint.int8.tflite"]["source"]["sha256"] = file_sha256(s.run / "models" / "joint.keras")
    (s.run / "convert.json").write_text(json.dumps(doc))
    assert conversion_done(s.run, ("float32", "int8"))[0]
    _touch(s.run / "edge" / "joint.int8.tflite", text="another file")
    assert not conversion_done(s.run, ("float32", "int8"))[0]


def test_bench_freshness(tmp_path: Path) -> None:
    s = _trained_run(tmp_path)
    _converted(s, ("float32", "int8"))
    assert not bench_done(s.run, 1)[0]
    _touch(s.run / "bench.json", text=json.dumps({"threads": 1, "variants": {}}))
    assert bench_done(s.run, 1)[0]
    assert not bench_done(s.run, 2)[0]
    _touch(s.run / "edge" / "multihead.int8.tflite", time.time() + 10)
    assert not bench_done(s.run, 1)[0]


def _labelled(data: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A valid dataset: (image, split, make, type) rows, each image a small text stand-in."""
    for image, *_ in rows:
        if not image.startswith(".."):
            _touch(data / image, text=f"image {image}")
    _touch(data / "labels.csv", text="image,split,make,type\n" + "".join(f"{','.join(r)}\n" for r in rows))
    return data


def test_bench_images_are_the_first_test_rows(tmp_path: Path) -> None:
    data = _labelled(tmp_path / "data", [
        ("img/0.png", "train", "m0", "t0"), ("img/1.png", "test", "m1", "t1"), ("img/2.png", "test", "m0", "t0"),
        ("img/3.png", "val", "m1", "t1"), ("img/4.png", "train", "m1", "t1"), ("img/5.png", "test", "m1", "t0"),
    ])
    out = prepare_bench_images(data, tmp_path / "bench", 2)
    assert (out / "labels.csv").read_text().splitlines() == [
        "image,split,make,type", "0000.png,test,m1,t1", "0001.png,test,m0,t0"]
    assert (out / "0001.png").read_text() == "image img/2.png"


def test_bench_images_follow_the_dataset_image_root(tmp_path: Path) -> None:
    # An imported Stanford Cars folder keeps its images in place: dataset.json names their root.
    root = tmp_path / "cars"
    _labelled(root, [("a.png", "train", "m0", "t0"), ("b.png", "train", "m1", "t1"),
                     ("c.png", "val", "m0", "t0"), ("d.png", "test", "m1", "t1")])
    data = tmp_path / "data"
    (data).mkdir()
    (data / "labels.csv").write_text((root / "labels.csv").read_text())
    (data / "dataset.json").write_text(json.dumps({"image_root": str(root)}))
    out = prepare_bench_images(data, tmp_path / "bench", 5)
    assert (out / "0000.png").read_text() == "image d.png"


def test_cpu_peak_from_cpuinfo() -> None:
    zen5 = ("vendor_id\t: AuthenticAMD\ncpu family\t: 26\ncpu MHz\t\t: 2596.122\n"
            "flags\t\t: fpu sse2 fma avx avx2 avx512f\n") * 2
    peak = cpu_peak(1, zen5)
    assert (peak.cores, peak.fma_units, peak.simd_lanes) == (1, 2, 16)
    assert abs(peak.macs_per_s - 2.596122e9 * 32) < 1e3
    assert "avx512f" in peak.how and "GHz" in peak.how
    zen4 = zen5.replace("26", "25")
    assert cpu_peak(1, zen4).simd_lanes == 8
    pi = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\nBogoMIPS\t: 108.00\n"
    p = cpu_peak(4, pi, fma_units=1)
    assert p.simd_lanes == 4 and p.fma_units == 1


def test_ratio_table_lists_failures() -> None:
    text = ratio_table({"ratios": {"latency multihead/separate float32": 0.51}, "errors": {"x": "boom"},
                        "machine": {"platform": "linux"}, "threads": 1, "how": {}})
    assert "0.510" in text and "x" in text and "FAILED: boom" in text


@pytest.mark.slow
def test_make_all_end_to_end_then_reuses_everything(tmp_path: Path) -> None:
    """The real stages' CLIs on a tiny synthetic set (tiny_cnn, 32 px, 1 epoch), run twice."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "report.pipeline", "--data", str(tmp_path / "data"), "--run",
            str(tmp_path / "run"), "--backbone", "tiny_cnn", "--image-size", "32", "--epochs", "1", "--weights", "none",
            "--protocol", "scratch",
            "--num-images", "150", "--synth-size", "48", "--holdout-combos", "2", "--bench-runs", "3",
            "--bench-images", "6"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    report = tmp_path / "run" / "report.md"
    assert first.stdout.strip().splitlines()[-1] == str(report)
    text = report.read_text()
    measured = [line for line in text.splitlines() if line.startswith(("| size ", "| latency p50 ", "| peak RSS "))]
    assert len(measured) >= 6 and not any("not measured" in line for line in measured), measured
    for name in ("config.json", "train.json", "convert.json", "bench.json", "predictions.json", "pipeline.json"):
        assert (tmp_path / "run" / name).is_file(), name
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    for stage in ("data", "train", "convert", "bench", "predictions"):
        assert f"[{stage}] up to date" in second.stderr
    steps = json.loads((tmp_path / "run" / "pipeline.json").read_text())["steps"]
    assert [s["name"] for s in steps] == ["data", "train", "convert", "bench", "predictions", "report"]


def test_a_different_synthetic_set_is_reported(tmp_path: Path) -> None:
    from report.pipeline import data_differences

    s = _settings(tmp_path, num_images=100, synth_size=64, holdout_combos=2)
    _touch(s.data / "dataset.json", text=json.dumps({"source": "synthetic", "num_images": 100, "image_size": 64,
                                                     "seed": 0, "holdout_combinations": [["a", "b"], ["c", "d"]]}))
    assert data_differences(s) == []
    assert data_differences(_settings(tmp_path, num_images=50, synth_size=64, holdout_combos=3)) == [
        "num_images=100 (asked 50)", "holdout_combos=2 (asked 3)"]


def test_a_failed_bench_still_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import report.pipeline as pipeline

    s = _trained_run(tmp_path)
    _labelled(s.data, [("img/0.png", "test", "Audi", "SUV"), ("img/1.png", "train", "Audi", "SUV"),
                       ("img/2.png", "train", "BMW", "Sedan"), ("img/3.png", "val", "BMW", "Sedan")])
    _converted(s, s.precisions)

    def failing(name: str, command, cwd=None) -> float:
        raise pipeline.PipelineError(f"stage '{name}' failed (exit 1): {command[0]}")

    monkeypatch.setattr(pipeline, "run_command", failing)
    with pytest.raises(pipeline.PipelineError, match="report written to .*report.md, but stage 'bench' failed"):
        pipeline.run_pipeline(s)
    text = (s.run / "report.md").read_text()
    assert "| latency p50 float32, interpreter | not measured |" in text
    steps = {st["name"]: st["status"] for st in json.loads((s.run / "pipeline.json").read_text())["steps"]}
    assert steps["bench"].startswith("failed") and steps["train"].startswith("reused")


def test_outside_image_paths_refused_unless_the_run_allowed_them(tmp_path: Path) -> None:
    from report.predictions import PredictionsError, run_allows_outside_paths, split_records

    data, run = tmp_path / "data", tmp_path / "run"
    _touch(tmp_path / "outside" / "0.png", text="image 0")
    _labelled(data, [("../outside/0.png", "test", "m0", "t0"), ("a.png", "train", "m0", "t0"),
                     ("b.png", "train", "m1", "t1"), ("c.png", "val", "m1", "t1")])
    run.mkdir()
    assert not run_allows_outside_paths(run)  # no config.json
    with pytest.raises(PipelineError, match=r"labels.csv row 2: image path '../outside/0.png'"):
        prepare_bench_images(data, tmp_path / "bench", 1, run_allows_outside_paths(run))
    with pytest.raises(PredictionsError, match=r"row 2: image path '../outside/0.png'"):
        split_records(data, run_allows_outside_paths(run))
    (run / "config.json").write_text(json.dumps({"data": str(data), "allow_outside_paths": True}))
    assert run_allows_outside_paths(run)
    out = prepare_bench_images(data, tmp_path / "bench", 1, run_allows_outside_paths(run))
    assert (out / "0000.png").read_text() == "image 0"
    assert [r.image for r in split_records(data, True)[1]] == ["../outside/0.png"]


def test_a_runs_outside_path_permission_is_for_its_own_dataset_only(tmp_path: Path) -> None:
    from report.predictions import run_allows_outside_paths

    data, other, run = tmp_path / "data", tmp_path / "other", tmp_path / "run"
    for root in (data, other):
        _labelled(root, [("a.png", "test", "m0", "t0"), ("b.png", "train", "m1", "t1")])
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(data), "allow_outside_paths": True}))
    assert run_allows_outside_paths(run, data)
    assert not run_allows_outside_paths(run, other)  # as convert: --data naming another set gets no permission
