"""Benchmark a deployment: every variant in its own fresh subprocess, one record per variant.

The parent (``run_bench``) finds the variants and the machine facts; a worker
(``python -m edge.bench '<json>'``, i.e. ``bench_variant``) loads one variant, times it and prints
one JSON line. A fresh process per variant means no variant inherits another's memory, and the
worker's peak RSS is that variant's alone. A failing variant is recorded and the rest go on.

Timings, per image:
- ``interpreter_ms``: a decoded uint8 image to per-head probabilities (quantise, signature
  runner call of every file of the variant, dequantise, joint decode);
- ``invoke_ms``: bare ``interpreter.invoke()`` (summed over the variant's files), timed right after
  each ``interpreter_ms`` call; the median of the paired differences is ``python_overhead_ms``, and
  relative to the median invoke, ``python_overhead_pct``;
- ``file_to_labels_ms``: an image file to labels with decoding prefetched in a thread; the time
  between consecutive results, so its mean is 1 / throughput;
- ``decode_ms``: decoding alone (file to input pixels: JPEG decode, EXIF, resize), one thread.
  File-to-labels approaches max(interpreter, decode) when a second core is free.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RSS_SAMPLE_S = 0.5


# -- the machine ----------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``model name``, or ``Hardware``/``Model`` on ARM)."""
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "Processor"):
        for line in info.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == key and v.strip():
                return v.strip()
    return platform.processor() or platform.machine() or "unknown"


def board_name() -> str:
    """The board (a Raspberry Pi's /proc/device-tree/model), else the CPU model."""
    return _read("/proc/device-tree/model") or cpu_model()


def cpu_governor() -> str:
    """The cpufreq governor of the CPUs ("performance", "ondemand", ...; "mixed: a,b"; "unknown")."""
    found = set()
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        g = _read(str(p))
        if g:
            found.add(g)
    if not found:
        return "unknown"
    return found.pop() if len(found) == 1 else "mixed: " + ",".join(sorted(found))


def system_info() -> dict[str, Any]:
    """Board, CPU, governor and the warnings a reader of the latencies needs."""
    governor = cpu_governor()
    warnings = []
    if governor != "performance":
        warnings.append(
            f"CPU governor is '{governor}', not 'performance': latencies may include frequency scaling "
            "(on a Pi: echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        )
    return {"board": board_name(), "cpu": cpu_model(), "governor": governor, "warnings": warnings,
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


# -- measurements ---------------------------------------------------------------------------------


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float] | None:
    """mean, p50, p90, p99, std of latencies in ms (None for no samples)."""
    if len(samples_ms) == 0:
        return None
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": round(float(a.mean()), 4), "p50": round(float(p50), 4), "p90": round(float(p90), 4),
            "p99": round(float(p99), 4), "std": round(float(a.std()), 4)}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 2)


def current_rss_mb() -> float:
    """This process's resident set size now, in MB (the peak where /proc is missing)."""
    statm = _read("/proc/self/statm")
    if statm:
        return int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    return peak_rss_mb()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted."""
    from edge.preprocess import is_image_file

    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _raw_invoke(model) -> Callable[[], None]:
    """The bare C++ invoke of a model's signature on whatever input is set (to measure Python overhead).

    The one place polyhead touches LiteRT's private attributes: ``Interpreter.invoke()`` refuses to
    run while a signature runner holds the interpreter ("There is at least 1 reference to internal
    data"), and the runner's call is ``_interpreter.Invoke(subgraph)`` plus the Python around it.
    """
    invoke = model.interpreter._interpreter.Invoke
    subgraph = getattr(model.runner, "_subgraph_index", 0)
    return lambda: invoke(subgraph)


def bench_variant(path: str, variant_id: str, images: str | None = None, runs: int = 50, warmup: int = 5,
                  threads: int = 1, duration_s: float | None = None,
                  progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure one variant in this process (the worker side of ``run_bench``)."""
    from edge.interpreter import limit_malloc_arenas
    from edge.labels import Accuracy, read_labels_csv
    from edge.predict import Predictor, iter_predictions
    from edge.variants import discover, select_variant

    limit_malloc_arenas()
    variant = select_variant(discover(path), variant_id)
    record: dict[str, Any] = {
        "variant": variant.variant, "precision": variant.precision, "approach": variant.approach,
        "files": [f.name for f in variant.files], "bytes": variant.bytes, "heads": list(variant.heads),
    }
    t0 = time.perf_counter()
    predictor = Predictor(variant, num_threads=threads)
    record["load_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
    record.update(runtime=predictor.runtime, runtime_version=predictor.runtime_version, threads=threads)
    h, w = predictor.height, predictor.width

    paths = list_images(images) if images else []
    arrays = []
    for p in paths[:4]:  # a few decoded images for the interpreter-only loop
        try:
            arrays.append(predictor.load(p))
        except Exception:
            continue
    if not arrays:
        rng = np.random.default_rng(0)
        arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]

    t0 = time.perf_counter()
    predictor.predict_image(arrays[0])
    record["first_inference_ms"] = round((time.perf_counter() - t0) * 1e3, 3)

    progress(f"{variant.id}: {warmup} warm-up + {runs} runs")
    for i in range(warmup):
        predictor.predict_image(arrays[i % len(arrays)])
    interp, invoke = [], []
    clock = time.perf_counter
    raw_invokes = [_raw_invoke(m) for m in predictor.models]

    def bare() -> float:
        t0 = clock()
        for invoke in raw_invokes:
            invoke()
        return clock() - t0

    # Interleaved, so both see the same load on a shared machine: the full per-image call and the
    # bare invoke(s) on the input it set, in alternating order (the second of two back-to-back calls
    # runs on warmer caches).
    for i in range(runs):
        x = arrays[i % len(arrays)]
        if i % 2:
            predictor.predict_image(x)  # sets this image's input for the bare invoke
            b = bare()
            t0 = clock()
            predictor.predict_image(x)
            a = clock() - t0
        else:
            t0 = clock()
            predictor.predict_image(x)
            a = clock() - t0
            b = bare()
        interp.append(a * 1e3)
        invoke.append(b * 1e3)
    record["interpreter_ms"] = latency_stats(interp)
    record["invoke_ms"] = latency_stats(invoke)
    # Median of the paired differences: each pair ran back to back, so a load spike on a shared
    # machine hits both halves of a pair instead of skewing one of two separate medians.
    overhead = np.median(np.subtract(interp, invoke))
    record["python_overhead_ms"] = round(float(overhead), 4)
    record["python_overhead_pct"] = round(float(overhead / np.median(invoke)) * 100, 2)

    # Decoding alone (file -> input pixels), so a file-to-labels time can be read against it.
    decode = []
    for p in paths[:20]:
        t0 = clock()
        try:
            predictor.load(p)
        except Exception:
            continue
        decode.append((clock() - t0) * 1e3)
    record["decode_ms"] = latency_stats(decode)

    errors = 0
    record["file_to_labels_ms"] = None
    record["images_per_s"] = round(1e3 / record["interpreter_ms"]["mean"], 2)
    if paths:
        n = max(runs, 1) + warmup
        stream = [paths[i % len(paths)] for i in range(n)]
        times = []
        t_start = clock()
        for i, pred in enumerate(iter_predictions(predictor, stream)):
            errors += not pred.ok
            if i >= warmup:
                times.append(clock())
        if len(times) > 1:
            record["file_to_labels_ms"] = latency_stats(np.diff(times) * 1e3)
            record["images_per_s"] = round((len(times) - 1) / (times[-1] - times[0]), 2)
        elif times:
            record["images_per_s"] = round(len(times) / (times[-1] - t_start), 2)

    record["accuracy"] = None
    labels_csv = Path(images) / "labels.csv" if images else None
    if labels_csv is not None and labels_csv.is_file():
        csv_heads, labels = read_labels_csv(labels_csv)
        acc = Accuracy.for_labels(csv_heads, predictor.heads)
        if acc.heads:
            progress(f"{variant.id}: accuracy over {len(labels)} labelled images")
            labelled = [p for p in labels if p.is_file()]
            for pred in iter_predictions(predictor, labelled):
                errors += not pred.ok
                acc.add(pred, labels[Path(pred.path)])
            record["accuracy"] = acc.to_dict()

    if duration_s:
        progress(f"{variant.id}: running for {duration_s:g} s")
        record.update(_soak(predictor, paths, arrays, duration_s))
        errors += record["duration_errors"]
    record["errors"] = errors
    record["peak_rss_mb"] = peak_rss_mb()
    return record


def _soak(predictor, paths: list[Path], arrays: list[np.ndarray], duration_s: float) -> dict[str, Any]:
    """Loop over the images for ``duration_s``: count errors and sample RSS to see it stays flat."""
    from edge.predict import iter_predictions

    def endless():
        while True:
            yield from paths

    t_start = time.perf_counter()
    t_end = t_start + duration_s
    samples: list[tuple[float, float]] = [(0.0, current_rss_mb())]
    next_sample = t_start + RSS_SAMPLE_S
    n = errors = 0
    source = iter_predictions(predictor, endless()) if paths else None
    try:
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
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


# -- the parent -----------------------------------------------------------------------------------


def _failed(variant, error: str) -> dict[str, Any]:
    """The record of a variant whose worker gave no measurements."""
    rec: dict[str, Any] = {"variant": variant.variant, "precision": variant.precision, "approach": variant.approach,
                           "files": [f.name for f in variant.files], "bytes": variant.bytes}
    rec.update({k: None for k in ("load_ms", "first_inference_ms", "interpreter_ms", "file_to_labels_ms",
                                  "images_per_s", "peak_rss_mb", "accuracy")})
    rec.update(errors=1, error=error)
    return rec


def run_bench(path: str | os.PathLike, images: str | os.PathLike | None = None, runs: int = 50,
              warmup: int = 5, threads: int = 1, duration_s: float | None = None,
              progress: Callable[[str], None] = lambda s: None, python: str | None = None,
              timeout_s: float | None = None) -> dict[str, Any]:
    """Benchmark every variant at ``path``, each in a fresh ``python`` subprocess; the bench.json dict."""
    from edge.interpreter import load_interpreter_class
    from edge.variants import discover

    problems: list[tuple[str, str]] = []
    variants = discover(path, problems)
    _, runtime, version = load_interpreter_class()
    result: dict[str, Any] = {**system_info(), "runtime": runtime, "runtime_version": version,
                              "threads": threads, "path": str(path), "images": str(images) if images else None,
                              "n_images": len(list_images(images)) if images else 0, "runs": runs,
                              "warmup": warmup, "duration_s": duration_s, "variants": {},
                              "file_errors": [{"file": f, "error": e} for f, e in problems]}
    timeout = timeout_s or 600 + 2 * (duration_s or 0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for i, (vid, variant) in enumerate(variants.items(), 1):
        progress(f"[{i}/{len(variants)}] {vid}: starting a fresh process")
        job = {"path": str(path), "variant_id": vid, "images": str(images) if images else None, "runs": runs,
               "warmup": warmup, "threads": threads, "duration_s": duration_s}
        stderr_tail: list[str] = []
        # ``with``: the pipes are closed and the worker reaped even if a progress callback raises.
        with subprocess.Popen([python or sys.executable, "-m", "edge.bench", json.dumps(job)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
            timer = threading.Timer(timeout, proc.kill)
            timer.start()
            try:
                for line in proc.stderr:  # relay the worker's progress live; its record is one short stdout line
                    line = line.rstrip("\n")
                    if line.startswith("progress: "):
                        progress(line[len("progress: "):])
                    elif line.strip():
                        stderr_tail = (stderr_tail + [line])[-5:]
                stdout = proc.stdout.read()
                proc.wait()
            finally:
                timed_out = not timer.is_alive() and proc.returncode is not None and proc.returncode < 0
                timer.cancel()
        if timed_out:
            result["variants"][vid] = _failed(variant, f"timed out after {timeout:g} s")
            progress(f"[{i}/{len(variants)}] {vid}: FAILED (timeout)")
            continue
        lines = stdout.strip().splitlines()
        try:
            record = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            # A crash (e.g. a segfault in a native op) leaves no record: keep its last words.
            last = stderr_tail[-1] if stderr_tail else ""
            record = {"error": f"worker exited with status {proc.returncode} {last}".strip()[:300]}
        if "error" in record and len(record) == 1:
            record = _failed(variant, record["error"])
            progress(f"[{i}/{len(variants)}] {vid}: FAILED: {record['error']}")
        else:
            f2l = record.get("file_to_labels_ms") or record["interpreter_ms"]
            progress(f"[{i}/{len(variants)}] {vid}: p50 {f2l['p50']:.2f} ms, peak RSS {record['peak_rss_mb']} MB")
        result["variants"][vid] = record
    for f, e in problems:
        progress(f"skipped {f}: {e}")
    return result


# -- output ---------------------------------------------------------------------------------------


def csv_rows(bench: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per variant (nested stats as ``interpreter_ms_p50`` etc.) and the header."""
    rows = []
    for vid, rec in bench["variants"].items():
        row: dict[str, Any] = {"variant_id": vid}
        for key, value in rec.items():
            if isinstance(value, dict) and key != "accuracy":
                for k, v in value.items():
                    row[f"{key}_{k}"] = v
            elif key == "accuracy":
                acc = value or {}
                for h, v in (acc.get("heads") or {}).items():
                    row[f"accuracy_{h}"] = v
                row["accuracy_joint"] = acc.get("joint")
                row["accuracy_n"] = acc.get("n")
            elif isinstance(value, list):
                row[key] = ";".join(map(str, value))
            else:
                row[key] = value
        for key in ("board", "governor", "runtime", "runtime_version"):
            row[key] = bench.get(key)
        rows.append(row)
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    return header, rows


def to_csv(bench: dict[str, Any]) -> str:
    import csv
    import io

    header, rows = csv_rows(bench)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(bench: dict[str, Any]) -> str:
    """A readable per-variant table (latencies are p50 per image, ms)."""
    cols = ("variant", "files", "MB", "load ms", "first ms", "interp p50", "f2l p50", "img/s", "RSS MB",
            "py ovh %", "joint acc", "errors")
    lines = []
    for vid, r in bench["variants"].items():
        acc = r.get("accuracy") or {}
        lines.append((vid, str(len(r.get("files") or [])),
                      _fmt(r["bytes"] / 1e6 if r.get("bytes") else None, 3), _fmt(r.get("load_ms"), 1),
                      _fmt(r.get("first_inference_ms"), 1), _fmt((r.get("interpreter_ms") or {}).get("p50")),
                      _fmt((r.get("file_to_labels_ms") or {}).get("p50")), _fmt(r.get("images_per_s"), 1),
                      _fmt(r.get("peak_rss_mb"), 1), _fmt(r.get("python_overhead_pct"), 1),
                      _fmt(acc.get("joint"), 3), _fmt(r.get("errors")) + (" (failed)" if r.get("error") else "")))
    widths = [max(len(c), *(len(row[i]) for row in lines)) if lines else len(c) for i, c in enumerate(cols)]
    out = [f"board: {bench['board']} | runtime: {bench['runtime']} {bench['runtime_version']} | "
           f"threads: {bench['threads']} | governor: {bench['governor']}"]
    out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in lines]
    for vid, r in bench["variants"].items():
        if r.get("error"):
            out.append(f"{vid}: {r['error']}")
    out += [f"warning: {w}" for w in bench.get("warnings", [])]
    return "\n".join(out)


def _worker(argv: list[str]) -> int:
    """``python -m edge.bench JOB_JSON``: bench one variant, print its record as one JSON line."""
    job = json.loads(argv[0])

    def progress(msg: str) -> None:
        print(f"progress: {msg}", file=sys.stderr, flush=True)

    try:
        record = bench_variant(job["path"], job["variant_id"], job.get("images"), int(job["runs"]),
                               int(job["warmup"]), int(job["threads"]), job.get("duration_s"), progress)
    except Exception as e:  # the parent records it and benchmarks the next variant
        text = str(e).strip().splitlines()
        print(json.dumps({"error": f"{type(e).__name__}: {text[0] if text else ''}"[:300]}))
        return 1
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
