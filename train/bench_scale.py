"""``python -m train.bench_scale``: the scale figures of docs/scale.md, written to one JSON file.

- peak RSS of ``python -m train`` (frozen Lite0, multihead, 2 epochs) at several dataset sizes, and
  its growth per image (the slope between the smallest and the largest run);
- images/s of feature extraction streamed (decoded a batch at a time while the backbone runs)
  against the old in-memory path (decode the whole split, then extract), in alternating rounds in
  one process, so both see the same machine;
- that the largest run trains and converts (``python -m convert``);
- optionally, that two train.json files (a reference run and this code's) have equal metrics to 4
  decimals and the same hash without their timing fields.

Synthetic datasets missing under ``--data-root`` are generated first (``python -m datasets synth``).
The machine is usually shared: the load average before and after is recorded with the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from edge.io import atomic_write_json

TIMING_KEYS = {"train_wall_s", "feature_extract_s", "versions"}


def _run(cmd: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``cmd``; its exit status, wall seconds and peak RSS (this child's own, from wait4)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KB on Linux.
    return {"cmd": " ".join(cmd), "returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "log": str(log_path)}


def _dataset(root: Path, n: int, size: int, base_n: int) -> Path:
    """A synthetic dataset of ``n`` images: the base set (``datasets synth``, ``base_n`` images), or
    for more, the base set's files hard-linked over and over (same labels and splits, one file per
    row): decoding and memory cost what ``n`` distinct files cost, without generating them for an hour."""
    base = root / f"synth-{base_n}"
    if not (base / "labels.csv").is_file():
        subprocess.run([sys.executable, "-m", "datasets", "synth", "--out", str(base), "--num-images", str(base_n),
                        "--image-size", str(size), "--holdout-combos", "4", "--seed", "0"], check=True)
    if n == base_n:
        return base
    out = root / f"synth-{base_n}-x{n}"
    if (out / "labels.csv").is_file():
        return out
    import csv

    with open(base / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = [header]
    for i in range(n):
        src = body[i % len(body)]
        name = f"images/{i:07d}{Path(src[0]).suffix}"
        if not (out / name).exists():
            os.link(base / src[0], out / name)
        lines.append([name, *src[1:]])
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(lines)
    return out


def extraction_rates(data: Path, image_size: int, n_images: int, rounds: int) -> dict[str, Any]:
    """Images/s of in-memory (decode all, then extract) and streamed extraction, alternating rounds."""
    import dataclasses

    from datasets.folder import load_dataset
    from datasets.pipeline import load_split, open_split
    from train.featurecache import extract_features
    from train.models import BACKBONE_LAYER, build_unit, model_units

    ds = load_dataset(data)
    ds = dataclasses.replace(ds, records=ds.split("train")[:n_images])
    unit = model_units("multihead", ds.schema)[0]
    base = build_unit(unit, "efficientnet_lite0", ds.schema, (image_size, image_size), "imagenet", 0,
                      freeze_base=True).get_layer(BACKBONE_LAYER)
    extract_features(base, load_split(ds, "train", image_size, image_size).images[:256])  # trace once
    rates: dict[str, list[float]] = {"in_memory": [], "streamed": []}
    for _ in range(rounds):
        t0 = time.perf_counter()
        arrays = load_split(ds, "train", image_size, image_size)
        extract_features(base, arrays.images)
        rates["in_memory"].append(len(arrays) / (time.perf_counter() - t0))
        del arrays
        t0 = time.perf_counter()
        streamed = open_split(ds, "train", image_size, image_size)
        extract_features(base, streamed.images)
        rates["streamed"].append(len(streamed) / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"images": len(ds.records), "rounds": rounds, "images_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "median_images_per_s": {k: round(v, 1) for k, v in med.items()},
            "streamed_over_in_memory": round(med["streamed"] / med["in_memory"], 3)}


def _strip(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if k not in TIMING_KEYS}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def _round4(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _round4(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_round4(v) for v in o]
    return round(o, 4) if isinstance(o, float) else o


def compare_train_json(reference: Path, candidate: Path) -> dict[str, Any]:
    """Hashes of two train.json files without timing fields, and whether their metrics agree to 4 decimals."""
    a, b = (_strip(json.loads(Path(p).read_text())) for p in (reference, candidate))
    digest = lambda x: hashlib.sha256(json.dumps(x, sort_keys=True).encode()).hexdigest()  # noqa: E731
    metrics = lambda x: _round4({k: v["metrics"] for k, v in x["variants"].items()})  # noqa: E731
    return {"reference": str(reference), "candidate": str(candidate), "sha256_reference": digest(a),
            "sha256_candidate": digest(b), "identical_without_timing": digest(a) == digest(b),
            "metrics_equal_4dp": metrics(a) == metrics(b)}


@click.command()
@click.option("--out", default="bench/scale.json", show_default=True, type=click.Path(dir_okay=False))
@click.option("--sizes", default="6000,18000,60000", show_default=True, help="dataset sizes (images)")
@click.option("--image-size", default=128, show_default=True)
@click.option("--epochs", default=2, show_default=True)
@click.option("--data-root", default="data", show_default=True, type=click.Path(file_okay=False))
@click.option("--runs-root", default="runs/scale", show_default=True, type=click.Path(file_okay=False))
@click.option("--extract-images", default=2048, show_default=True, help="train images timed per extraction round")
@click.option("--rounds", default=3, show_default=True, help="alternating extraction rounds")
@click.option("--reference", type=click.Path(dir_okay=False), help="train.json of the starting commit's default run")
@click.option("--candidate", type=click.Path(dir_okay=False), help="train.json of this code's default run")
@click.option("--base-images", default=6000, show_default=True, help="images generated; larger sets hard-link them")
@click.option("--backbone", default="efficientnet_lite0", show_default=True,
              help="frozen base of the timed runs (a cheaper one isolates the data path's memory)")
@click.option("--weights", default="imagenet", show_default=True)
@click.option("--skip-convert", is_flag=True)
@click.option("--keep", is_flag=True,
              help="keep the figures --out already holds for the same settings (sizes that trained, the extraction "
                   "rates): measure only what is missing, so an hours-long benchmark can be finished in parts")
def main(out: str, sizes: str, image_size: int, epochs: int, data_root: str, runs_root: str, extract_images: int,
         rounds: int, reference: str | None, candidate: str | None, base_images: int, backbone: str, weights: str,
         skip_convert: bool, keep: bool) -> None:
    """Measure and write the scale figures (see the module docstring)."""
    ns = sorted(int(s) for s in sizes.split(","))
    settings = {"backbone": backbone, "weights": weights, "image_size": image_size, "epochs": epochs}
    record: dict[str, Any] = {**settings, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                                      "load_average_start": [round(x, 2) for x in os.getloadavg()]}}
    kept: dict[int, dict[str, Any]] = {}
    if keep and Path(out).is_file():
        old = json.loads(Path(out).read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            kept = {r["images"]: r for r in old.get("train_peak_rss", []) if r.get("returncode") == 0}
            record.update({k: old[k] for k in ("extraction", "default_run_train_json") if k in old})
        else:
            click.echo(f"{out}: measured with other settings; --keep keeps nothing from it")
    datasets = {n: _dataset(Path(data_root), n, image_size, base_images) for n in ns}
    if rounds > 0 and "extraction" not in record:
        record["extraction"] = extraction_rates(datasets[ns[0]], image_size, extract_images, rounds)
        click.echo(json.dumps(record["extraction"]))
    if reference and candidate:
        record["default_run_train_json"] = compare_train_json(Path(reference), Path(candidate))
    atomic_write_json(Path(out), record)
    runs = []
    for n in ns:
        if n in kept:
            runs.append(kept[n])
            continue
        run = Path(runs_root) / f"frozen-{n}"
        cmd = [sys.executable, "-m", "train", "--data", str(datasets[n]), "--out", str(run), "--backbone",
               backbone, "--image-size", str(image_size), "--epochs", str(epochs), "--batch-size", "32",
               "--weights", weights, "--protocol", "frozen", "--freeze-base", "--approach", "multihead", "--seed", "0",
               "--verbose", "0"]
        load_before = [round(x, 2) for x in os.getloadavg()]
        r = {"images": n, **_run(cmd, run.parent / f"train-{n}.log"), "load_average_before": load_before,
             "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        runs.append(r)
        click.echo(json.dumps(r))
        record["train_peak_rss"] = runs
        atomic_write_json(Path(out), record)  # each figure kept as soon as it is measured
    first, last = runs[0], runs[-1]
    if len(runs) > 1:
        record["rss_growth_kb_per_image"] = round(
            (last["peak_rss_mb"] - first["peak_rss_mb"]) * 1024 / (last["images"] - first["images"]), 2)
    if not skip_convert:
        run = Path(runs_root) / f"frozen-{last['images']}"
        conv = _run([sys.executable, "-m", "convert", str(run), "--precision", "float32,int8"],
                    run.parent / f"convert-{last['images']}.log")
        record["largest_converts"] = {"images": last["images"], **conv}
    record["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_json(Path(out), record)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
