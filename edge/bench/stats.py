"""The bench's figures: latency statistics, compact histograms, and ratios with bootstrap intervals.

One code path: ``polyhead-edge bench`` (its table), ``make bench`` (report.benchmarks.suite) and the
report (report.render.markdown) all compute every ratio through ``ratio`` / ``bench_ratios`` below, from the
same bench.json.

A ratio is paired by round. Rounds run interleaved (A B C A B C ...), so round r of every variant
ran within seconds of each other and saw the same machine. Per round, a variant contributes the
median (p50) of that round's per-image samples; the per-round ratio is numerator p50 / denominator
p50, and the ratio is the geometric mean of the per-round ratios. Its 95 % interval is a
percentile bootstrap over rounds: resample the rounds with replacement, recompute the geometric
mean, take the 2.5th and 97.5th percentiles. A round in which either side failed is left out of
that ratio (and the count of rounds used is kept with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bench.records import Histogram, LatencyStats, RatioRecord

HIST_BIN_LOG10 = 0.01
"""Histogram bin width in log10(ms): each bin is 2.3 % wide, so a percentile read back is within 1.2 %."""
BOOTSTRAP_RESAMPLES = 4000
CONFIDENCE = 0.95


def latency_stats(samples_ms: Sequence[float]) -> LatencyStats | None:
    """mean, p50, p90, p99, std of latencies in ms (None for no samples)."""
    if len(samples_ms) == 0:
        return None
    a = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(mean=round(float(a.mean()), 4), p50=round(float(p50), 4), p90=round(float(p90), 4),
                        p99=round(float(p99), 4), std=round(float(a.std()), 4))


def histogram(samples_ms: Sequence[float]) -> Histogram:
    """A compact log-spaced histogram: ``bins`` = [[k, count], ...], bin k = [10^(k w), 10^((k+1) w)) ms."""
    a = np.asarray(samples_ms, dtype=np.float64)
    a = a[a > 0]
    if a.size == 0:
        return Histogram(bin_log10=HIST_BIN_LOG10, bins=[])
    keys, counts = np.unique(np.floor(np.log10(a) / HIST_BIN_LOG10).astype(np.int64), return_counts=True)
    return Histogram(bin_log10=HIST_BIN_LOG10, bins=[[int(k), int(c)] for k, c in zip(keys, counts, strict=True)])


def histogram_values(hist: Mapping[str, Any] | None) -> list[float]:
    """Samples back from a histogram (each at its bin's geometric centre): for plots and pooled stats."""
    if not isinstance(hist, Mapping) or not hist.get("bins"):
        return []
    w = float(hist.get("bin_log10", HIST_BIN_LOG10))
    out: list[float] = []
    for k, count in hist["bins"]:
        out += [10 ** ((k + 0.5) * w)] * int(count)
    return out


@dataclass(frozen=True)
class Interval:
    """A ratio, its bootstrap 95 % interval over rounds (None with fewer than 2 rounds), rounds used."""

    value: float
    low: float | None
    high: float | None
    rounds: int

    @property
    def crosses_one(self) -> bool:
        """True when the interval includes 1.0: no measurable difference."""
        return self.low is not None and self.high is not None and self.low <= 1.0 <= self.high

    def text(self, digits: int = 3) -> str:
        """``0.512 [0.498, 0.527]``, or the value alone when there is no interval."""
        if self.low is None or self.high is None:
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> RatioRecord:
        return RatioRecord(value=round(self.value, 4), low=_round4(self.low), high=_round4(self.high),
                           rounds=self.rounds, no_measurable_difference=self.crosses_one)


def _round4(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float],
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Interval | None:
    """Geometric mean of paired per-round ratios and its percentile-bootstrap 95 % interval."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    ok = (num > 0) & (den > 0) & np.isfinite(num) & np.isfinite(den)
    logs = np.log(num[ok] / den[ok])
    if logs.size == 0:
        return None
    value = math.exp(float(logs.mean()))
    if logs.size < 2:
        return Interval(value, None, None, 1)
    idx = np.random.default_rng(seed).integers(0, logs.size, (resamples, logs.size))
    means = logs[idx].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.exp(np.percentile(means, [tail, 100 - tail]))
    return Interval(value, float(low), float(high), int(logs.size))


# -- ratios over a bench.json ---------------------------------------------------------------------

MAX_DECODE_INTERPRETER = "max_decode_interpreter"
"""A pseudo-kind: per round, the larger of the decode and interpreter p50s (what prefetching can reach)."""


def _round_p50(round_record: Mapping[str, Any], kind: str) -> float | None:
    if kind == MAX_DECODE_INTERPRETER:
        parts = [_round_p50(round_record, k) for k in ("decode", "interpreter")]
        return None if None in parts else max(parts)  # type: ignore[type-var]
    value = (round_record.get(f"{kind}_ms") or {}).get("p50")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _rounds_by_index(record: Mapping[str, Any] | None) -> dict[int, Mapping[str, Any]]:
    rounds = (record or {}).get("rounds") or []
    return {int(r["round"]): r for r in rounds if isinstance(r, Mapping) and not r.get("error")}


def ratio(bench: Mapping[str, Any] | None, numerator: tuple[str, str], denominator: tuple[str, str],
          ) -> Interval | None:
    """``(variant id, kind)`` over ``(variant id, kind)``, paired by round; kind is ``interpreter``,
    ``file_to_labels``, ``decode`` or ``max_decode_interpreter``.

    A bench.json without rounds (written before rounds existed) gives the ratio of the pooled p50s,
    without an interval."""
    variants = (bench or {}).get("variants") or {}
    a, b = variants.get(numerator[0]), variants.get(denominator[0])
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return None
    ra, rb = _rounds_by_index(a), _rounds_by_index(b)
    if ra and rb:
        pairs = [(_round_p50(ra[i], numerator[1]), _round_p50(rb[i], denominator[1])) for i in sorted(set(ra) & set(rb))]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        return bootstrap_ratio([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None
    x, y = _round_p50(a, numerator[1]), _round_p50(b, denominator[1])
    return Interval(x / y, None, None, 0) if x is not None and y is not None else None


def ratio_specs(variant_ids: Sequence[str]) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """(name, numerator, denominator) of every ratio the bench reports for these variants."""
    ids = set(variant_ids)
    specs = []
    for precision in ("float32", "int8"):
        for other in ("separate", "joint"):
            num, den = f"multihead.{precision}", f"{other}.{precision}"
            if {num, den} <= ids:
                specs.append((f"latency multihead/{other} {precision}", (num, "interpreter"), (den, "interpreter")))
    for approach in ("multihead", "joint", "separate"):
        num, den = f"{approach}.int8", f"{approach}.float32"
        if {num, den} <= ids:
            specs.append((f"latency int8/float32 {approach}", (num, "interpreter"), (den, "interpreter")))
    for vid in sorted(ids):
        specs.append((f"file-to-labels/interpreter {vid}", (vid, "file_to_labels"), (vid, "interpreter")))
        specs.append((f"file-to-labels/max(decode, interpreter) {vid}", (vid, "file_to_labels"),
                      (vid, MAX_DECODE_INTERPRETER)))
    return specs


def bench_ratios(bench: Mapping[str, Any] | None) -> dict[str, Interval]:
    """Every ratio of ``ratio_specs`` that this bench.json can give, by name."""
    variants = (bench or {}).get("variants") or {}
    out = {}
    for name, num, den in ratio_specs(list(variants)):
        value = ratio(bench, num, den)
        if value is not None:
            out[name] = value
    return out


def ratio_lines(ratios: Mapping[str, Interval]) -> list[str]:
    """One line per ratio: ``name  value [low, high]`` and a mark when the interval crosses 1.0."""
    width = max([len(k) for k in ratios] + [5])
    lines = []
    for name, iv in ratios.items():
        mark = "  (no measurable difference)" if iv.crosses_one else ""
        rounds = f"  ({iv.rounds} rounds)" if iv.rounds else "  (no rounds: no interval)"
        lines.append(f"{name:<{width}}  {iv.text()}{rounds}{mark}")
    return lines
