"""bench.json as TypedDicts: what ``polyhead-edge bench`` (edge/bench/run.py) writes.

``bench_key_errors`` lists every key a bench.json misses or has in excess; the tests hold every
bench.json they write to it. Standard library only, like convert.records. Times are milliseconds
(``_ms``) or seconds (``_s``), memory megabytes (``_mb``, 2^20 bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

from edge.io import JsonFileError, key_errors, read_json_object

KINDS = ("interpreter", "invoke", "decode", "file_to_labels")
"""Per-image sample kinds a round records; each is a ``<kind>_ms`` field of a round and of a variant."""


class LatencyStats(TypedDict):
    """Per-image latencies of one kind, ms."""

    mean: float
    p50: float
    p90: float
    p99: float
    std: float


class Histogram(TypedDict):
    bin_log10: float
    """Bin width in log10(ms)."""
    bins: list[list[int]]
    """``[k, count]`` pairs; bin k covers [10^(k w), 10^((k+1) w)) ms."""


class RoundLatency(LatencyStats):
    """One round's latencies of one kind: the statistics, their sample count and histogram."""

    n: int
    histogram: Histogram


class FailedRound(TypedDict):
    """A round whose worker failed (crash, timeout): why."""

    round: int
    load1: float | None
    """1-minute load average as the round started (None where the OS has none)."""
    error: str


class BenchRound(TypedDict):
    """One round of one variant in a fresh process; a ``<kind>_ms`` is None when that kind had no samples."""

    round: int
    load1: float | None
    load_ms: float | None
    first_inference_ms: float | None
    peak_rss_mb: float | None
    decode_failures: int | None
    stream_errors: int | None
    interpreter_ms: RoundLatency | None
    invoke_ms: RoundLatency | None
    decode_ms: RoundLatency | None
    file_to_labels_ms: RoundLatency | None


class _AccuracyRequired(TypedDict):
    heads: dict[str, float]
    heads_n: dict[str, int]
    """Per head, the predictions with that head's label."""
    joint: float | None
    """Every head right, over ``joint_n`` rows labelled for every head (None without such rows)."""
    joint_n: int
    n: int


class AccuracyRecord(_AccuracyRequired, total=False):
    """Accuracy over the images' labels.csv (edge.runtime.labels.Accuracy): fractions 0..1."""

    joint_catalogue: float | None
    """With a catalogue (``predict --catalogue``): the same rows, the catalogue's combination right."""


class _VariantRequired(TypedDict):
    variant: str
    precision: str
    approach: str
    files: list[str]
    bytes: int
    load_ms: float | None
    """Median over the good rounds (None without one), as is ``first_inference_ms``."""
    first_inference_ms: float | None
    interpreter_ms: LatencyStats | None
    """Pooled over the good rounds' samples, as is every ``<kind>_ms``."""
    invoke_ms: LatencyStats | None
    decode_ms: LatencyStats | None
    file_to_labels_ms: LatencyStats | None
    python_overhead_ms: float | None
    """Median over rounds of the median paired (interpreter - invoke) difference."""
    python_overhead_pct: float | None
    images_per_s: float | None
    """1000 / mean file-to-labels ms (interpreter ms without images)."""
    peak_rss_mb: float | None
    """The largest round's peak resident memory."""
    accuracy: AccuracyRecord | None
    decode_failures: int
    failed_rounds: int
    errors: int
    """Failed images plus failed rounds."""
    rounds: list[BenchRound | FailedRound]


class FailedVariant(_VariantRequired):
    """A variant without a good round (every figure None): the first round's ``error``."""

    error: str


class _MeasuredVariantRequired(_VariantRequired):
    heads: list[str]
    """The first good round's, as are ``runtime``, ``runtime_version`` and ``threads``."""
    runtime: str
    runtime_version: str
    threads: int


class MeasuredVariant(_MeasuredVariantRequired, total=False):
    """A variant with at least one good round (failed ones are in its ``rounds``)."""

    duration_s: float
    """``--duration`` only (the soak, in the last round), as are every ``duration_*`` and ``rss_*``."""
    duration_images: int
    duration_errors: int
    rss_start_mb: float
    rss_end_mb: float
    rss_slope_mb_per_min: float
    rss_samples: int


BenchVariant = MeasuredVariant | FailedVariant
"""One variant, keyed ``<approach>.<precision>`` in ``variants``."""


class RatioRecord(TypedDict):
    """A latency ratio (edge.bench.stats.Interval), p50 paired by round, with its 95 % bootstrap interval."""

    value: float
    low: float | None
    high: float | None
    rounds: int
    no_measurable_difference: bool
    """The interval holds 1.0."""


class FileError(TypedDict):
    """A file at the bench's path that is not a usable variant."""

    file: str
    error: str


class MachineInfo(TypedDict):
    """The machine (edge.bench.machine.system_info)."""

    board: str
    cpu: str
    governor: str
    warnings: list[str]
    cpu_count: int | None
    machine: str
    python: str
    load_average_start: list[float] | None
    """1, 5 and 15 minute load averages (None where the OS has none)."""


class BenchRecord(MachineInfo):
    """bench.json."""

    runtime: str
    runtime_version: str
    threads: int
    path: str
    images: str | None
    n_images: int
    runs: int
    warmup: int
    rounds: int
    min_time_s: float
    duration_s: float | None
    variants: dict[str, BenchVariant]
    file_errors: list[FileError]
    load_average_end: list[float] | None
    load1_max: float | None
    busy: bool
    """``load1_max`` was above ``cpu_count``: latencies are noisy (a warning says so)."""
    ratios: dict[str, RatioRecord]


def _round_key_errors(entry: Mapping[str, Any], where: str) -> list[str]:
    if "error" in entry:
        return key_errors(entry, FailedRound, where)
    errors = key_errors(entry, BenchRound, where)
    for kind in KINDS:
        latency = entry.get(f"{kind}_ms")
        if latency is not None:
            errors += key_errors(latency, RoundLatency, f"{where} {kind}_ms")
            if "histogram" in latency:
                errors += key_errors(latency["histogram"], Histogram, f"{where} {kind}_ms histogram")
    return errors


def _variant_key_errors(variant: Mapping[str, Any], where: str) -> list[str]:
    errors = key_errors(variant, FailedVariant if "error" in variant else MeasuredVariant, where)
    for kind in KINDS:
        if variant.get(f"{kind}_ms") is not None:
            errors += key_errors(variant[f"{kind}_ms"], LatencyStats, f"{where} {kind}_ms")
    if variant.get("accuracy") is not None:
        errors += key_errors(variant["accuracy"], AccuracyRecord, f"{where} accuracy")
    for entry in variant.get("rounds", []):
        errors += _round_key_errors(entry, f"{where} round {entry.get('round')}")
    return errors


def bench_key_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every key of a bench.json document that ``BenchRecord`` (and the types in it) does not expect, or misses."""
    errors = key_errors(doc, BenchRecord, "bench.json")
    for i, problem in enumerate(doc.get("file_errors", [])):
        errors += key_errors(problem, FileError, f"bench.json file_errors[{i}]")
    for name, ratio in doc.get("ratios", {}).items():
        errors += key_errors(ratio, RatioRecord, f"ratio '{name}'")
    for vid, variant in doc.get("variants", {}).items():
        errors += _variant_key_errors(variant, f"variant {vid}")
    return errors


def bench_is_current(record: Path, models: Sequence[Path], threads: int) -> tuple[bool, str]:
    """Whether the bench.json at ``record`` measured ``models`` (.tflite files) as they are now, with
    ``threads``; and why. bench.json keeps no file hashes, so "as they are now" is: written after the
    newest of them. Device-neutral (paths in, no run folder): ``make all`` asks it on the host."""
    try:
        bench = read_json_object(record)
    except JsonFileError:
        return False, f"no {record.name}"
    if not models:
        return False, "no .tflite files"
    newest = max(f.stat().st_mtime for f in models)
    if record.stat().st_mtime < newest:
        return False, f"{record.name} older than a .tflite"
    if bench.get("threads") is not None and int(bench["threads"]) != threads:
        return False, f"{record.name} measured with threads={bench['threads']}"
    return True, f"{record.name} newer than every .tflite"
