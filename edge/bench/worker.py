"""One bench round of one variant, in its own fresh process: ``python -m edge.bench.worker '<job json>'``.

``bench_round`` loads the variant and runs the measurements below, each returning its part of the
round's record; the worker prints the record as one JSON line on stdout (progress goes to stderr).
Each timed loop runs for at least ``runs`` images *and* at least its share of ``min_time_s``, so a
fast model is timed over a fixed wall time, not over a count that takes a millisecond.

Per-image samples (ms), kept raw here; the parent (edge.bench.run) turns them into statistics and
compact histograms:
- ``interpreter``: a decoded uint8 image to per-head probabilities (quantise, every file's
  signature runner, dequantise, joint decode);
- ``invoke``: the bare C++ invoke(s) of the same input, timed right beside it (``_raw_invoke``);
- ``decode``: an image file to input pixels, one thread. A file that fails to decode is timed too
  and counted in ``decode_failures``: it is never silently left out;
- ``file_to_labels``: files to labels with decoding prefetched in a thread; the time between
  consecutive results (a failed file is a result too, counted in ``stream_errors``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

RSS_SAMPLE_S = 0.5
Progress = Callable[[str], None]


def _raw_invoke(model: Any) -> Callable[[], None]:
    """The bare C++ invoke of ``model``'s signature on whatever input is set: bench's only use of
    private LiteRT attributes, kept here alone.

    ``Interpreter.invoke()`` refuses to run while a signature runner holds the interpreter ("There is
    at least 1 reference to internal data"); the runner itself calls ``_interpreter.Invoke(subgraph)``,
    which is what is timed here with nothing around it. The same in ai-edge-litert and tflite-runtime
    2.14; if a release renames it, only ``python_overhead`` is lost (see ``measure_interpreter``)."""
    invoke = model.interpreter._interpreter.Invoke
    subgraph = getattr(model.runner, "_subgraph_index", 0)
    return lambda: invoke(subgraph)


def _timed(runs: int, min_time_s: float) -> Iterator[int]:
    """Yield 0, 1, 2, ... until at least ``runs`` iterations and ``min_time_s`` seconds have passed."""
    deadline = time.perf_counter() + min_time_s
    i = 0
    while i < runs or time.perf_counter() < deadline:
        yield i
        i += 1


def open_variant(path: str, variant_id: str, threads: int) -> tuple[Any, dict[str, Any]]:
    """The variant's Predictor and the record's identity and load-time part."""
    from edge.runtime.interpreter import limit_malloc_arenas
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover, select_variant

    limit_malloc_arenas()
    variant = select_variant(discover(path), variant_id)
    t0 = time.perf_counter()
    predictor = Predictor(variant, num_threads=threads, trial_run=False)  # first_inference_ms is timed here
    return predictor, {
        "variant": variant.variant, "precision": variant.precision, "approach": variant.approach,
        "files": [f.name for f in variant.files], "bytes": variant.bytes, "heads": list(variant.heads),
        "load_ms": round((time.perf_counter() - t0) * 1e3, 3), "runtime": predictor.runtime,
        "runtime_version": predictor.runtime_version, "threads": threads,
    }


def sample_arrays(predictor: Any, paths: list[Path]) -> tuple[list[np.ndarray], int]:
    """A few decoded images for the interpreter loop (random pixels without images); failures counted."""
    from edge.runtime.preprocess import ImageError

    arrays, failed = [], 0
    for p in paths[:4]:
        try:
            arrays.append(predictor.load(p))
        except ImageError:
            failed += 1
    if not arrays:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (predictor.height, predictor.width, 3), dtype=np.uint8) for _ in range(4)]
    return arrays, failed


def measure_interpreter(predictor: Any, arrays: list[np.ndarray], runs: int, warmup: int,
                        min_time_s: float) -> dict[str, Any]:
    """First inference, then interpreter and bare-invoke samples, interleaved pair by pair."""
    clock = time.perf_counter
    t0 = clock()
    predictor.predict_image(arrays[0])
    part: dict[str, Any] = {"first_inference_ms": round((clock() - t0) * 1e3, 3)}
    for i in range(warmup):
        predictor.predict_image(arrays[i % len(arrays)])
    try:
        invokes = [_raw_invoke(m) for m in predictor.models]
    except AttributeError:  # a runtime without the private call: interpreter samples only
        invokes = []
    interp, bare = [], []
    for i in _timed(runs, min_time_s):
        x = arrays[i % len(arrays)]
        # Alternate the order of the pair: the second of two back-to-back calls runs on warmer caches.
        if i % 2 and invokes:
            predictor.predict_image(x)  # sets this image's input for the bare invoke
            bare.append(_time_all(invokes))
        t0 = clock()
        predictor.predict_image(x)
        interp.append((clock() - t0) * 1e3)
        if not i % 2 and invokes:
            bare.append(_time_all(invokes))
    part["interpreter_samples"] = interp
    part["invoke_samples"] = bare
    return part


def _time_all(calls: list[Callable[[], None]]) -> float:
    t0 = time.perf_counter()
    for call in calls:
        call()
    return (time.perf_counter() - t0) * 1e3


def measure_decode(predictor: Any, paths: list[Path], runs: int, min_time_s: float) -> dict[str, Any]:
    """File to input pixels, one thread, cycling over the images; failures timed and counted."""
    from edge.runtime.preprocess import ImageError

    if not paths:
        return {"decode_samples": [], "decode_failures": 0}
    samples, failures = [], 0
    for i in _timed(min(runs, len(paths)), min_time_s):
        t0 = time.perf_counter()
        try:
            predictor.load(paths[i % len(paths)])
        except ImageError:
            failures += 1
        samples.append((time.perf_counter() - t0) * 1e3)
    return {"decode_samples": samples, "decode_failures": failures}


def _endless(paths: list[Path]) -> Iterator[Path]:
    while True:
        yield from paths


def measure_stream(predictor: Any, paths: list[Path], runs: int, warmup: int, min_time_s: float) -> dict[str, Any]:
    """Files to labels with prefetched decoding: the time between consecutive results."""
    from edge.runtime.predict import iter_predictions

    if not paths:
        return {"file_to_labels_samples": [], "stream_errors": 0}
    clock = time.perf_counter
    stream = iter_predictions(predictor, _endless(paths))
    errors = 0
    try:
        for _ in range(warmup):
            errors += not next(stream).ok
        times = [clock()]
        for _ in _timed(runs, min_time_s):
            errors += not next(stream).ok
            times.append(clock())
    finally:
        stream.close()
    return {"file_to_labels_samples": list(np.diff(times) * 1e3), "stream_errors": errors}


def measure_accuracy(predictor: Any, images: str | None, progress: Progress) -> dict[str, Any]:
    """Per-head and joint accuracy over a labels.csv beside the images (None without one)."""
    from edge.runtime.labels import Accuracy, read_labels_csv
    from edge.runtime.predict import iter_predictions

    labels_csv = Path(images) / "labels.csv" if images else None
    if labels_csv is None or not labels_csv.is_file():
        return {"accuracy": None, "accuracy_errors": 0}
    csv_heads, labels = read_labels_csv(labels_csv)
    acc = Accuracy.for_labels(csv_heads, predictor.heads)
    if not acc.heads:
        return {"accuracy": None, "accuracy_errors": 0}
    progress(f"accuracy over {len(labels)} labelled images")
    errors = 0
    for pred in iter_predictions(predictor, [p for p in labels if p.is_file()]):
        errors += not pred.ok
        acc.add(pred, labels[Path(pred.path)])
    return {"accuracy": acc.to_dict(), "accuracy_errors": errors}


def soak(predictor: Any, paths: list[Path], arrays: list[np.ndarray], duration_s: float) -> dict[str, Any]:
    """Loop over the images for ``duration_s``: count errors and sample RSS to see it stays flat."""
    from edge.bench.machine import current_rss_mb
    from edge.runtime.predict import iter_predictions

    t_start = time.perf_counter()
    samples: list[tuple[float, float]] = [(0.0, current_rss_mb())]
    next_sample = t_start + RSS_SAMPLE_S
    n = errors = 0
    source = iter_predictions(predictor, _endless(paths)) if paths else None
    try:
        while (now := time.perf_counter()) < t_start + duration_s:
            if source is not None:
                errors += not next(source).ok
            else:
                predictor.predict_image(arrays[n % len(arrays)])
            n += 1
            if now >= next_sample:
                samples.append((now - t_start, current_rss_mb()))
                next_sample = now + RSS_SAMPLE_S
    finally:
        if source is not None:
            source.close()
    samples.append((time.perf_counter() - t_start, current_rss_mb()))
    t = np.array([s[0] for s in samples]) / 60.0
    rss = np.array([s[1] for s in samples])
    # Fit the second half only: allocator pools and caches settle first (a few MB over the first
    # thousand images), a leak keeps growing.
    keep = t >= t[-1] * 0.5
    slope = float(np.polyfit(t[keep], rss[keep], 1)[0]) if keep.sum() >= 3 and np.ptp(t[keep]) > 0 else 0.0
    return {"duration_s": round(time.perf_counter() - t_start, 3), "duration_images": n,
            "duration_errors": errors, "rss_start_mb": round(float(rss[0]), 2),
            "rss_end_mb": round(float(rss[-1]), 2), "rss_slope_mb_per_min": round(slope, 4),
            "rss_samples": len(samples)}


def bench_round(job: dict[str, Any], progress: Progress = lambda s: None) -> dict[str, Any]:
    """One round of one variant: the job's measurements in this process, as one record."""
    from edge.bench.machine import list_images, peak_rss_mb

    runs, warmup, min_time_s = int(job["runs"]), int(job["warmup"]), float(job["min_time_s"])
    predictor, record = open_variant(job["path"], job["variant_id"], int(job["threads"]))
    paths = list_images(job["images"]) if job.get("images") else []
    arrays, record["sample_decode_failures"] = sample_arrays(predictor, paths)
    progress(f"round {job['round']}: >= {runs} runs and >= {min_time_s:g} s per loop")
    # The time budget: interpreter and stream get 40 % each, decoding (one thread, cheap) 20 %.
    record.update(measure_interpreter(predictor, arrays, runs, warmup, 0.4 * min_time_s))
    record.update(measure_decode(predictor, paths, runs, 0.2 * min_time_s))
    record.update(measure_stream(predictor, paths, runs, warmup, 0.4 * min_time_s))
    if job.get("accuracy"):
        record.update(measure_accuracy(predictor, job.get("images"), progress))
    if job.get("duration_s"):
        progress(f"running for {job['duration_s']:g} s")
        record.update(soak(predictor, paths, arrays, float(job["duration_s"])))
    record["peak_rss_mb"] = peak_rss_mb()
    return record


def main(argv: list[str]) -> int:
    """Run the job in ``argv[0]``; print the record (or ``{"error": ...}``) as one JSON line."""
    job = json.loads(argv[0])

    def progress(msg: str) -> None:
        print(f"progress: {job['variant_id']}: {msg}", file=sys.stderr, flush=True)

    try:
        record = bench_round(job, progress)
    except Exception as e:  # the parent records it and goes on with the other rounds and variants
        text = str(e).strip().splitlines()
        print(json.dumps({"error": f"{type(e).__name__}: {text[0] if text else ''}"[:300]}))
        return 1
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
