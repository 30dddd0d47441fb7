"""The report's plots (matplotlib, Agg backend), drawn from the same JSON as the tables.

Each function draws one figure into a PNG and returns its path, or returns None when the JSON it
needs is not there yet (the report then shows the tables alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from report.render.markdown import (
    APPROACHES,
    PRECISIONS,
    RunData,
    _get,
    _number,
    bench_record,
    latency_ms,
    tflite_bytes,
    tflite_check,
    train_figure,
)

COLORS = {"multihead": "#1f77b4", "separate": "#ff7f0e", "joint": "#2ca02c"}
MARKERS = {"float32": "o", "float16": "s", "dynamic": "D", "int8": "^"}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend."""
    # Agg: no display on the build machine; imported lazily so `--help` and imports stay fast.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, dpi: int = 90, bbox_inches: str | None = "tight") -> Path:
    """Write ``fig`` as a PNG atomically (edge.io) and close it."""
    import io

    from edge.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches=bbox_inches)
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def variant_accuracy(run: RunData, approach: str, precision: str) -> tuple[float | None, str]:
    """Joint accuracy of a deployed variant: its convert check on the test split, else on the bench
    images, else the Keras model's test figure (the title says which)."""
    checked = _number(_get(tflite_check(run, approach, precision), "joint_accuracy"))
    if checked is not None:
        return checked, "tflite on the test split"
    bench_acc = _number(_get(bench_record(run, approach, precision), "accuracy", "joint"))
    if bench_acc is not None:
        return bench_acc, "tflite on bench images"
    return train_figure(run, approach, "metrics", "test", "joint_accuracy"), "keras on test split"


def plot_accuracy_vs_latency(run: RunData, path: Path) -> Path | None:
    points = []
    sources = set()
    for approach in APPROACHES:
        for precision in PRECISIONS:
            latency = latency_ms(run, approach, precision)
            accuracy, source = variant_accuracy(run, approach, precision)
            if latency is not None and accuracy is not None:
                points.append((approach, precision, latency, accuracy))
                sources.add(source)
    if not points:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for approach, precision, latency, accuracy in points:
        ax.scatter(latency, 100 * accuracy, color=COLORS.get(approach), marker=MARKERS.get(precision, "o"), s=60,
                   label=f"{approach} {precision}")
        ax.annotate(f"{approach}\n{precision}", (latency, 100 * accuracy), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.margins(x=0.15, y=0.2)  # room for the point labels
    ax.set_xlabel("latency p50, interpreter (ms per image)")
    ax.set_ylabel("joint accuracy (%)")
    ax.set_title(f"{run.backbone}: accuracy vs latency\n(accuracy: {', '.join(sorted(sources))})", fontsize=9)
    ax.grid(alpha=0.3)
    return save_png(fig, path)


def plot_sizes(run: RunData, path: Path) -> Path | None:
    sizes = {(a, p): tflite_bytes(run, a, p) for a in APPROACHES for p in PRECISIONS}
    if all(v is None for v in sizes.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    x = np.arange(len(APPROACHES))
    width = 0.8 / len(PRECISIONS)
    for i, precision in enumerate(PRECISIONS):
        values = [(sizes[(a, precision)] or 0) / 1e6 for a in APPROACHES]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=precision)
        for bar, approach in zip(bars, APPROACHES, strict=True):
            if sizes[(approach, precision)] is None:
                ax.annotate("not\nmeasured", (bar.get_x() + bar.get_width() / 2, 0), ha="center", fontsize=6)
    ax.set_xticks(x, APPROACHES)
    ax.set_ylabel("size on disk (MB)")
    ax.set_title(f"{run.backbone}: .tflite size per approach and precision", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def latency_samples(record: Mapping[str, Any] | None, kind: str) -> list[float] | None:
    """Per-image latency samples (ms): raw ones if bench.json carries them (``<kind>_ms.samples``),
    else read back from its rounds' histograms (each sample at its 2.3 %-wide bin's centre)."""
    from edge.bench.stats import histogram_values

    values = _get(record, f"{kind}_ms", "samples")
    if isinstance(values, Sequence) and values and all(_number(v) is not None for v in values):
        return [float(v) for v in values]
    rounds = _get(record, "rounds")
    if isinstance(rounds, Sequence):
        pooled = [x for r in rounds for x in histogram_values(_get(r, f"{kind}_ms", "histogram"))]
        return pooled or None
    return None


def plot_latency_distribution(run: RunData, path: Path) -> Path | None:
    """Box plots from raw samples when bench.json has them; else the recorded percentiles, drawn as such."""
    entries = []
    for precision in PRECISIONS:
        for approach in APPROACHES:
            record = bench_record(run, approach, precision)
            stats = _get(record, "interpreter_ms")
            if isinstance(stats, Mapping) and _number(stats.get("p50")) is not None:
                entries.append((f"{approach}\n{precision}", approach, stats, latency_samples(record, "interpreter")))
    if not entries:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    have_samples = all(samples for *_, samples in entries)
    if have_samples:
        ax.boxplot([samples for *_, samples in entries], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(entries) + 1), [label for label, *_ in entries], fontsize=7)
        subtitle = "box: p25-p75, line: p50, whiskers: p1-p99 of the raw samples"
    else:
        for i, (_label, approach, stats, _) in enumerate(entries, start=1):
            color = COLORS.get(approach)
            p50, p90, p99 = (_number(stats.get(k)) for k in ("p50", "p90", "p99"))
            mean, std = _number(stats.get("mean")), _number(stats.get("std"))
            if mean is not None and std is not None:
                ax.errorbar(i - 0.15, mean, yerr=std, fmt="x", color=color, capsize=3)
            ax.scatter([i] * 3, [p50, p90 or np.nan, p99 or np.nan], color=color, marker="_", s=300)
            ax.vlines(i, p50, p99 if p99 is not None else p50, color=color, alpha=0.6)
        ax.set_xticks(range(1, len(entries) + 1), [label for label, *_ in entries], fontsize=7)
        subtitle = "bench.json holds percentiles only: ticks at p50, p90, p99; x = mean +- std"
    ax.set_ylabel("latency, interpreter (ms per image)")
    ax.set_title(f"{run.backbone}: latency distribution\n({subtitle})", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def plot_confusion(run: RunData, head: str, path: Path) -> Path | None:
    """Confusion matrix of one head of the multihead model, from predictions.json."""
    entry = _get(run.predictions, "heads", head)
    matrix = _get(entry, "confusion")
    classes = _get(entry, "classes")
    if not isinstance(matrix, Sequence) or not matrix or not isinstance(classes, Sequence):
        return None
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(classes):
        return None
    rows = m.sum(axis=1, keepdims=True)
    normalised = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    plt = pyplot()
    side = min(10.0, 2.5 + 0.18 * len(classes))
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    fontsize = 8 if len(classes) <= 12 else 5
    ax.set_xticks(ticks, classes, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, classes, fontsize=fontsize)
    if len(classes) <= 12:
        for i in range(len(classes)):
            for j in range(len(classes)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if normalised[i, j] > 0.5 else "black")
    total = m.sum()
    accuracy = np.trace(m) / total if total else float("nan")
    variant = _get(run.predictions, "variant") or "multihead"
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{run.backbone} {variant}: head '{head}' (n={int(total)}, accuracy {100 * accuracy:.1f} %)",
                 fontsize=9)
    return save_png(fig, path)


def make_plots(run: RunData, plot_dir: Path, prefix: str = "") -> list[Path]:
    """Every plot the run's JSON allows, plus the pipeline's prediction grid if it made one."""
    made = [
        plot_accuracy_vs_latency(run, plot_dir / f"{prefix}accuracy_vs_latency.png"),
        plot_sizes(run, plot_dir / f"{prefix}size.png"),
        plot_latency_distribution(run, plot_dir / f"{prefix}latency.png"),
    ]
    for head in run.heads:
        made.append(plot_confusion(run, head, plot_dir / f"{prefix}confusion_{head}.png"))
    grid = _get(run.predictions, "grid")
    if isinstance(grid, str) and (run.path / grid).is_file():
        made.append(run.path / grid)
    return [p for p in made if p is not None]
