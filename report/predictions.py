"""``python -m report.predictions RUN --data DIR``: the multihead model's test-split predictions as JSON.

Runs the deployed multihead .tflite (float32 if present) with the edge runtime on the test split
and writes ``RUN/predictions.json`` (a confusion matrix per head plus a few samples) and
``RUN/plots/predictions_grid.png`` (test images with their predicted labels). The report then
draws the confusion matrices from the JSON, so "the report reads only JSON" stays true.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from artifacts.layout import RunLayout
from edge.errors import PolyheadError
from edge.io import atomic_write_json
from edge.log import configure_logging

GRID_IMAGES = 12
GRID_FILE = "plots/predictions_grid.png"


class PredictionsError(PolyheadError):
    """No multihead model or no labelled test images to predict."""


def run_allows_outside_paths(run: Path, data: Path | None = None) -> bool:
    """The run's config.json ``allow_outside_paths`` (trained with ``--allow-outside-paths``).

    With ``data``, only for the run's own dataset (the folder config.json names), as the convert
    stage honours it: a run's permission does not carry over to another ``--data``.
    """
    try:
        config = json.loads(RunLayout(run).config.read_text(encoding="utf-8"))
        if config.get("allow_outside_paths") is not True:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    if data is None:
        return True
    from convert.data import resolve_data_root
    from convert.errors import ConvertError

    try:
        return resolve_data_root(str(config.get("data", "")), run).resolve() == data.resolve()
    except (ConvertError, OSError):
        return False


def split_records(data: Path, allow_outside_paths: bool, split: str = "test",
                  limit: int | None = None) -> tuple[tuple[str, ...], list[Any]]:
    """(head names, records of ``split`` in labels.csv order) through ``datasets.folder.load_dataset``,
    so image roots (``dataset.json``) and the outside-path rule are the datasets stage's own."""
    from datasets.folder import DatasetError, load_dataset

    try:
        ds = load_dataset(data, allow_outside_paths=allow_outside_paths)
    except DatasetError as e:
        raise PredictionsError(str(e)) from None
    records = list(ds.split(split))
    if not records:
        raise PredictionsError(f"{data / 'labels.csv'}: no rows in split '{split}'")
    return ds.heads, records[:limit] if limit else records


def choose_variant(run: Path, variant: str | None = None) -> Any:
    """The multihead variant to predict with: ``variant`` if given, else float32, else any precision."""
    from edge.runtime.variants import discover

    edge_dir = RunLayout(run).edge_dir
    variants = discover(edge_dir)
    if variant:
        if variant not in variants:
            raise PredictionsError(f"{edge_dir}: no variant {variant}. Found: {sorted(variants)}")
        return variants[variant]
    for vid in ("multihead.float32", *sorted(v for v in variants if v.startswith("multihead."))):
        if vid in variants:
            return variants[vid]
    raise PredictionsError(f"{edge_dir}: no multihead .tflite. Found: {sorted(variants)}")


def predicted_model(run: Path) -> Path | None:
    """The multihead .tflite the predictions stage shows (float32 when there is one), None without one."""
    multihead = [p for p in RunLayout(run).tflite_files() if p.name.startswith("multihead.")]
    return next((p for p in multihead if ".float32." in p.name), multihead[0] if multihead else None)


def predictions_done(run: Path) -> tuple[bool, str]:
    """Whether predictions.json was written after the multihead model it shows changed; and why."""
    chosen, path = predicted_model(run), RunLayout(run).predictions
    if chosen is None:
        return True, "no multihead .tflite"
    if path.exists() and path.stat().st_mtime >= chosen.stat().st_mtime:
        return True, f"{path.name} newer than the multihead model"
    return False, f"{path.name} missing or older than the multihead model"


def compute_predictions(run: Path, data: Path, threads: int = 1, limit: int | None = 2000,
                        variant: str | None = None) -> dict[str, Any]:
    """Predict the test split with the multihead model; confusion matrix per head, a few samples."""
    from edge.runtime.predict import Predictor

    chosen = choose_variant(run, variant)
    csv_heads, records = split_records(data, run_allows_outside_paths(run, data), limit=limit)
    predictor = Predictor(chosen, num_threads=threads)
    heads = [h for h in predictor.heads if h in csv_heads]
    classes = {h.name: list(h.classes) for h in predictor.schema.heads}
    confusion = {h: np.zeros((len(classes[h]),) * 2, dtype=np.int64) for h in heads}
    samples, errors, unknown = [], 0, 0
    start = time.perf_counter()
    for record in records:
        pred = predictor.predict_file(record.path)
        if not pred.ok:
            errors += 1
            continue
        labels = dict(zip(csv_heads, record.labels, strict=True))
        true = {h: labels[h] for h in heads}
        if any(true[h] not in classes[h] for h in heads):
            unknown += 1  # a class the model never saw cannot sit in its confusion matrix
            continue
        for h in heads:
            confusion[h][classes[h].index(true[h]), classes[h].index(pred.heads[h].label)] += 1
        if len(samples) < GRID_IMAGES:
            samples.append({"image": record.image, "path": str(record.path), "true": true,
                            "pred": {h: pred.heads[h].label for h in heads},
                            "score": {h: round(pred.heads[h].score, 4) for h in heads}})
    n = int(next(iter(confusion.values())).sum()) if confusion else 0
    return {
        "variant": chosen.id, "files": [str(f.relative_to(run)) for f in chosen.files],
        "data": str(data), "split": "test", "n": n, "errors": errors, "unknown_labels": unknown,
        "runtime": predictor.runtime, "runtime_version": predictor.runtime_version, "threads": threads,
        "wall_s": round(time.perf_counter() - start, 2),
        "heads": {h: {"classes": classes[h], "confusion": confusion[h].tolist(),
                      "accuracy": float(np.trace(confusion[h]) / n) if n else None} for h in heads},
        "samples": samples,
    }


def draw_grid(data: Path, samples: list[dict[str, Any]], path: Path, size: int = 128) -> Path | None:
    """Test images with predicted labels (green: every head right, red: a head wrong)."""
    if not samples:
        return None
    from edge.runtime.preprocess import ImageError, load_image
    from report.render.plots import pyplot, save_png

    plt = pyplot()

    cols = 4
    rows = (len(samples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, sample in zip(np.atleast_1d(axes).ravel(), samples, strict=False):
        try:
            ax.imshow(load_image(sample.get("path") or data / sample["image"], size, size))
        except ImageError:
            continue
        right = all(sample["pred"][h] == sample["true"][h] for h in sample["pred"])
        lines = [f"{h}: {sample['pred'][h]} ({sample['score'][h]:.2f})" for h in sample["pred"]]
        if not right:
            lines.append("true: " + "/".join(sample["true"].values()))
        ax.set_title("\n".join(lines), fontsize=6.5, color="green" if right else "red")
    fig.tight_layout()
    return save_png(fig, path, dpi=60, bbox_inches=None)


def write_predictions(run: Path, data: Path, threads: int = 1, limit: int | None = 2000,
                      variant: str | None = None) -> Path:
    """Write RUN/predictions.json and the image grid; returns the JSON's path."""
    result = compute_predictions(run, data, threads, limit, variant)
    if draw_grid(data, result["samples"], run / GRID_FILE) is not None:
        result["grid"] = GRID_FILE
    return atomic_write_json(RunLayout(run).predictions, result)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset folder (its labels.csv test split).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--limit", type=int, default=2000, show_default=True, help="At most this many test images.")
@click.option("--variant", default=None, help="Default: multihead.float32, else another multihead precision.")
def main(run: Path, data: Path, threads: int, limit: int, variant: str | None) -> None:
    """Predict the test split with RUN's multihead model into RUN/predictions.json."""
    configure_logging()
    try:
        path = write_predictions(run, data, threads, limit, variant)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
