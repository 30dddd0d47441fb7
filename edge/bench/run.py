"""Benchmark a deployment: every variant in rounds, interleaved, each round in a fresh subprocess.

``run_bench`` (the parent) finds the variants and the machine facts, then runs ``rounds`` rounds in
the order A B C A B C ...: every (round, variant) is a fresh ``python -m edge.bench.worker`` process
(edge.bench.worker.bench_round), so no variant inherits another's memory, a worker's peak RSS is
its variant's alone, and drift on a shared machine falls on every variant alike. A round that fails
is recorded in the variant's ``rounds`` and its other rounds are kept.

Each variant's record has the pooled statistics over its rounds (``interpreter_ms`` etc.: mean,
p50, p90, p99, std), and ``rounds``: per round its load average, statistics and a compact
histogram of the per-image samples. Ratios and their bootstrap intervals over rounds come from
edge.bench.stats, the one code path the report and ``make bench`` share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge.bench.machine import busy_warning, list_images, load_average, system_info
from edge.bench.records import (
    KINDS,
    BenchRecord,
    BenchRound,
    BenchVariant,
    FailedRound,
    FailedVariant,
    FileError,
    MeasuredVariant,
    RoundLatency,
)
from edge.bench.stats import bench_ratios, histogram, latency_stats

__all__ = ["list_images", "round_order", "run_bench", "summarise_variant"]

DEFAULT_ROUNDS = 5
DEFAULT_MIN_TIME_S = 0.6
"""Minimum wall time of one round's timed loops (interpreter 40 %, decode 20 %, file-to-labels 40 %).
With 5 rounds, the 6 variants of ``make all``'s deployment take about 30 fresh processes x (0.6 s +
start-up and model load): under a minute on an idle 2-core machine."""

# numpy's OpenBLAS starts one thread per core at import, each with its own buffers; nothing on the
# device path multiplies matrices with numpy, so one thread costs nothing and saves resident memory.
WORKER_ENV = {"PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1"}


def round_order(variant_ids: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, variant id) in run order: every variant once per round, A B C A B C ..."""
    return [(r, vid) for r in range(rounds) for vid in variant_ids]


def run_worker(job: dict[str, Any], python: str | None, timeout_s: float,
               progress: Callable[[str], None]) -> dict[str, Any]:
    """Run one round in a fresh process; its record, or ``{"error": ...}`` (crash, timeout)."""
    stderr_tail: list[str] = []
    env = {**os.environ, **WORKER_ENV}
    # ``with``: the pipes are closed and the worker reaped even if a progress callback raises.
    with subprocess.Popen([python or sys.executable, "-m", "edge.bench.worker", json.dumps(job)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        # The record (raw samples) can outgrow a pipe's buffer: read stdout in a thread, or the worker
        # blocks writing it while this loop waits for stderr to end.
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        try:
            for line in proc.stderr:  # relay the worker's progress live
                line = line.rstrip("\n")
                if line.startswith("progress: "):
                    progress(line[len("progress: "):])
                elif line.strip():
                    stderr_tail = (stderr_tail + [line])[-5:]
            reader.join()
            proc.wait()
        finally:
            timed_out = not timer.is_alive() and proc.returncode is not None and proc.returncode < 0
            timer.cancel()
    stdout = out[0] if out else ""
    if timed_out:
        return {"error": f"timed out after {timeout_s:g} s"}
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        # A crash (e.g. a segfault in a native op) leaves no record: keep its last words.
        last = stderr_tail[-1] if stderr_tail else ""
        return {"error": f"worker exited with status {proc.returncode} {last}".strip()[:300]}


def _round_entry(index: int, load1: float | None, raw: dict[str, Any]) -> BenchRound | FailedRound:
    """What bench.json keeps of one round: scalars, and per kind its statistics and histogram."""
    if "error" in raw:
        return FailedRound(round=index, load1=load1, error=raw["error"])
    latencies: dict[str, Any] = {}
    for kind in KINDS:
        samples = raw.get(f"{kind}_samples") or []
        stats = latency_stats(samples)
        latencies[f"{kind}_ms"] = None if stats is None else RoundLatency(**stats, n=len(samples),
                                                                           histogram=histogram(samples))
    return BenchRound(round=index, load1=load1, load_ms=raw.get("load_ms"),
                      first_inference_ms=raw.get("first_inference_ms"), peak_rss_mb=raw.get("peak_rss_mb"),
                      decode_failures=raw.get("decode_failures"), stream_errors=raw.get("stream_errors"), **latencies)


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(np.median(kept)), 3) if kept else None


def summarise_variant(variant: Any, raws: Sequence[tuple[int, float | None, dict[str, Any]]]) -> BenchVariant:
    """One variant's bench.json record from its rounds ``(round, load1, worker record)``."""
    good = [raw for _, _, raw in raws if "error" not in raw]
    failed = [raw["error"] for _, _, raw in raws if "error" in raw]
    identity = {"variant": variant.variant, "precision": variant.precision, "approach": variant.approach,
                "files": [f.name for f in variant.files], "bytes": variant.bytes}
    figures = _pooled_figures(good)
    rounds = [_round_entry(i, load1, raw) for i, load1, raw in raws]
    if not good:  # no measurement at all; a round that failed among good ones is in ``rounds``
        return FailedVariant(**identity, **figures, decode_failures=0, failed_rounds=len(failed),
                             errors=len(failed), error=failed[0], rounds=rounds)
    first = good[0]
    # The soak ran in one round (the last).
    soak = {k: v for r in good for k, v in r.items() if k.startswith(("duration_", "rss_"))}
    image_errors = sum(r.get("stream_errors", 0) + r.get("accuracy_errors", 0) + r.get("duration_errors", 0)
                       for r in good)
    return MeasuredVariant(**identity, heads=first.get("heads"), runtime=first.get("runtime"),
                           runtime_version=first.get("runtime_version"), threads=first.get("threads"),
                           **figures, **soak, decode_failures=sum(r.get("decode_failures", 0) for r in good),
                           failed_rounds=len(failed), errors=image_errors + len(failed), rounds=rounds)


def _pooled_figures(good: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A variant's figures over its good rounds: medians, pooled latencies, overhead, throughput, memory."""
    pooled = {kind: latency_stats([x for r in good for x in r.get(f"{kind}_samples") or []]) for kind in KINDS}
    f2l = pooled["file_to_labels"] or pooled["interpreter"]
    return {"load_ms": _median([r.get("load_ms") for r in good]),
            "first_inference_ms": _median([r.get("first_inference_ms") for r in good]),
            **{f"{kind}_ms": stats for kind, stats in pooled.items()},
            **_overhead(good),
            "images_per_s": round(1e3 / f2l["mean"], 2) if f2l and f2l["mean"] > 0 else None,
            "peak_rss_mb": max((r["peak_rss_mb"] for r in good), default=None),
            "accuracy": next((r["accuracy"] for r in good if "accuracy" in r), None)}


def _overhead(good: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Python overhead: median over rounds of the median paired (interpreter - invoke) difference."""
    diffs, invokes = [], []
    for r in good:
        a, b = r.get("interpreter_samples") or [], r.get("invoke_samples") or []
        if a and len(a) == len(b):
            # Pairs ran back to back, so a load spike hits both halves of a pair.
            diffs.append(float(np.median(np.subtract(a, b))))
            invokes.append(float(np.median(b)))
    if not diffs:
        return {"python_overhead_ms": None, "python_overhead_pct": None}
    overhead, invoke = float(np.median(diffs)), float(np.median(invokes))
    return {"python_overhead_ms": round(overhead, 4),
            "python_overhead_pct": round(overhead / invoke * 100, 2) if invoke > 0 else None}


def _job(path: Any, vid: str, images: Any, runs: int, warmup: int, threads: int, min_time_s: float,
         round_index: int, rounds: int, duration_s: float | None) -> dict[str, Any]:
    return {"path": str(path), "variant_id": vid, "images": str(images) if images else None, "runs": runs,
            "warmup": warmup, "threads": threads, "min_time_s": min_time_s, "round": round_index,
            "accuracy": round_index == 0, "duration_s": duration_s if round_index == rounds - 1 else None}


def run_bench(path: str | os.PathLike, images: str | os.PathLike | None = None, runs: int = 50,
              warmup: int = 5, threads: int = 1, duration_s: float | None = None,
              progress: Callable[[str], None] = lambda s: None, python: str | None = None,
              timeout_s: float | None = None, rounds: int = DEFAULT_ROUNDS,
              min_time_s: float = DEFAULT_MIN_TIME_S) -> BenchRecord:
    """Benchmark every variant at ``path`` in interleaved rounds of fresh subprocesses; the bench.json dict."""
    from edge.runtime.interpreter import load_interpreter_class
    from edge.runtime.variants import discover

    problems: list[tuple[str, str]] = []
    variants = discover(path, problems)
    _, runtime, version = load_interpreter_class()
    # load_average_end, load1_max, busy and ratios are added once the rounds have run.
    result = BenchRecord(**system_info(), runtime=runtime, runtime_version=version, threads=threads, path=str(path),
                         images=str(images) if images else None,
                         n_images=len(list_images(images)) if images else 0, runs=runs, warmup=warmup,
                         rounds=rounds, min_time_s=min_time_s, duration_s=duration_s, variants={},
                         file_errors=[FileError(file=f, error=e) for f, e in problems])
    timeout = timeout_s or 600 + 2 * (duration_s or 0)
    raws: dict[str, list[tuple[int, float | None, dict[str, Any]]]] = {vid: [] for vid in variants}
    ids = list(variants)
    for r, vid in round_order(ids, rounds):
        tag = f"[{ids.index(vid) + 1}/{len(ids)}] {vid} round {r + 1}/{rounds}"
        load1 = (load_average() or [None])[0]
        raw = run_worker(_job(path, vid, images, runs, warmup, threads, min_time_s, r, rounds, duration_s),
                         python, timeout, progress)
        raws[vid].append((r, load1, raw))
        if "error" in raw:
            progress(f"{tag}: FAILED: {raw['error']}")
        else:
            kind = "file_to_labels" if raw.get("file_to_labels_samples") else "interpreter"
            progress(f"{tag}: {kind} p50 {np.median(raw[f'{kind}_samples']):.3f} ms, "
                     f"peak RSS {raw['peak_rss_mb']} MB")
    for vid, variant in variants.items():
        result["variants"][vid] = summarise_variant(variant, raws[vid])
    _machine_load(result, raws)
    result["ratios"] = {name: iv.to_dict() for name, iv in bench_ratios(result).items()}
    for f, e in problems:
        progress(f"skipped {f}: {e}")
    return result


def _machine_load(result: BenchRecord, raws: dict[str, list[tuple[int, float | None, dict[str, Any]]]]) -> None:
    """The load average over the bench, and the busy flag and warning when it was above the cores."""
    loads = [load1 for rounds in raws.values() for _, load1, _ in rounds if load1 is not None]
    result["load_average_end"] = load_average()
    if result["load_average_end"]:
        loads.append(result["load_average_end"][0])
    result["load1_max"] = max(loads, default=None)
    warning = busy_warning(result["load1_max"], result.get("cpu_count"))
    result["busy"] = warning is not None
    if warning:
        result["warnings"].append(warning)
