"""The bench's rounds and intervals (issue 14): known-answer intervals on synthetic samples, the
interleaving order, and a failing round kept. Tiny models, no timing assertions."""

from __future__ import annotations

import json
import math
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401

from edge.bench.machine import busy_warning
from edge.bench.records import bench_key_errors
from edge.bench.run import round_order, run_bench, summarise_variant
from edge.bench.stats import (
    Interval,
    bench_ratios,
    bootstrap_ratio,
    histogram,
    histogram_values,
    latency_stats,
    ratio,
)


def test_constant_ratio_has_a_zero_width_interval():
    iv = bootstrap_ratio([2.0, 4.0, 6.0, 8.0], [1.0, 2.0, 3.0, 4.0])
    assert iv is not None and iv.rounds == 4
    assert iv.value == pytest.approx(2.0) and iv.low == pytest.approx(2.0) and iv.high == pytest.approx(2.0)
    assert not iv.crosses_one and iv.text() == "2.000 [2.000, 2.000]"


def test_two_rounds_interval_is_their_two_ratios():
    # Resampling two rounds gives (r1, r1), (r1, r2), (r2, r1), (r2, r2): geometric means r1 (1/4),
    # sqrt(r1 r2) (1/2) and r2 (1/4), so the 2.5th and 97.5th percentiles are exactly r1 and r2.
    iv = bootstrap_ratio([0.8, 1.25], [1.0, 1.0])
    assert iv.value == pytest.approx(1.0)
    assert iv.low == pytest.approx(0.8) and iv.high == pytest.approx(1.25)
    assert iv.crosses_one and "no_measurable_difference" in iv.to_dict()


def test_interval_of_a_known_spread():
    # Per-round log-ratios with a known standard deviation: the bootstrap interval of their mean is
    # about +-1.96 sigma / sqrt(n) wide (within 10 % at 40 rounds).
    rng = np.random.default_rng(1)
    logs = rng.normal(math.log(0.5), 0.05, 40)
    iv = bootstrap_ratio(np.exp(logs), np.ones(40))
    half = 1.96 * logs.std() / math.sqrt(40)
    assert iv.value == pytest.approx(math.exp(logs.mean()))
    assert math.log(iv.high / iv.value) == pytest.approx(half, rel=0.1)
    assert math.log(iv.value / iv.low) == pytest.approx(half, rel=0.1)


def test_one_round_has_no_interval_and_bad_rounds_are_dropped():
    assert bootstrap_ratio([1.0], [2.0]) == Interval(0.5, None, None, 1)
    assert bootstrap_ratio([1.0, 0.0, float("nan")], [2.0, 1.0, 1.0]).rounds == 1
    assert bootstrap_ratio([], []) is None
    assert Interval(0.5, None, None, 1).text() == "0.500"


def test_histogram_round_trip_within_a_bin():
    samples = [0.31, 0.32, 0.33, 0.5, 2.0, 2.0]
    h = histogram(samples)
    assert sum(c for _, c in h["bins"]) == 6
    back = sorted(histogram_values(h))
    for a, b in zip(sorted(samples), back, strict=True):
        assert abs(math.log10(a) - math.log10(b)) <= h["bin_log10"]
    assert histogram([]) == {"bin_log10": h["bin_log10"], "bins": []}


def test_interleaving_order():
    assert round_order(["a", "b", "c"], 2) == [(0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"), (1, "c")]
    assert round_order(["a"], 3) == [(0, "a"), (1, "a"), (2, "a")]


class _Variant:
    variant, precision, approach, files, bytes = "multihead", "int8", "multihead", (Path("m.tflite"),), 10


def _raw(interp: float, f2l: float, decode: float) -> dict:
    return {"load_ms": 1.0, "first_inference_ms": 2.0, "peak_rss_mb": 40.0, "interpreter_samples": [interp] * 5,
            "invoke_samples": [interp / 2] * 5, "decode_samples": [decode] * 5, "file_to_labels_samples": [f2l] * 5,
            "decode_failures": 1, "stream_errors": 0}


def test_ratios_pair_rounds_and_skip_a_failed_one():
    a = summarise_variant(_Variant, [(0, 0.5, _raw(1.0, 1.2, 0.5)), (1, 3.0, {"error": "boom"}),
                                     (2, 0.5, _raw(2.0, 2.4, 0.5))])
    b = summarise_variant(_Variant, [(0, 0.5, _raw(2.0, 3.0, 0.5)), (1, 3.0, _raw(9.0, 9.0, 0.5)),
                                     (2, 0.5, _raw(4.0, 6.0, 0.5))])
    assert a["failed_rounds"] == 1 and a["errors"] == 1 + 0 and a["decode_failures"] == 2
    assert a.get("error") is None and a["rounds"][1] == {"round": 1, "load1": 3.0, "error": "boom"}
    assert a["rounds"][0]["interpreter_ms"]["n"] == 5 and a["python_overhead_ms"] == pytest.approx(0.75)
    bench = {"variants": {"multihead.int8": a, "joint.int8": b}}
    iv = ratio(bench, ("multihead.int8", "interpreter"), ("joint.int8", "interpreter"))
    assert iv.rounds == 2 and iv.value == pytest.approx(0.5) and iv.low == pytest.approx(0.5)  # round 1 left out
    names = bench_ratios(bench)
    assert names["latency multihead/joint int8"].value == pytest.approx(0.5)
    assert names["file-to-labels/interpreter multihead.int8"].value == pytest.approx(1.2)
    assert names["file-to-labels/max(decode, interpreter) multihead.int8"].value == pytest.approx(1.2)


def test_bench_key_errors_name_a_renamed_key():
    from edge.bench.machine import system_info

    measured = summarise_variant(_Variant, [(0, 0.5, _raw(1.0, 1.2, 0.5)), (1, 3.0, {"error": "boom"})])
    failed = summarise_variant(_Variant, [(0, None, {"error": "boom"})])
    doc = {**system_info(), "runtime": "ai-edge-litert", "runtime_version": "2", "threads": 1, "path": "edge",
           "images": None, "n_images": 0, "runs": 5, "warmup": 1, "rounds": 2, "min_time_s": 0.0,
           "duration_s": None, "variants": {"multihead.int8": measured, "joint.int8": failed},
           "file_errors": [{"file": "x.tflite", "error": "no card"}], "load_average_end": None, "load1_max": None,
           "busy": False}
    doc["ratios"] = {name: iv.to_dict() for name, iv in bench_ratios(doc).items()}
    assert doc["ratios"] and bench_key_errors(doc) == []
    doc["load_avg_end"] = doc.pop("load_average_end")
    measured["rss_mb"] = measured.pop("peak_rss_mb")
    measured["rounds"][0]["interpreter_ms"]["median"] = measured["rounds"][0]["interpreter_ms"].pop("p50")
    del failed["error"]  # a failed variant without its error reads as a measured one missing its runtime
    assert bench_key_errors(doc) == [
        "bench.json: missing key 'load_average_end'", "bench.json: unknown key 'load_avg_end'",
        "variant multihead.int8: missing key 'peak_rss_mb'", "variant multihead.int8: unknown key 'rss_mb'",
        "variant multihead.int8 round 0 interpreter_ms: missing key 'p50'",
        "variant multihead.int8 round 0 interpreter_ms: unknown key 'median'",
        "variant joint.int8: missing key 'heads'", "variant joint.int8: missing key 'runtime'",
        "variant joint.int8: missing key 'runtime_version'", "variant joint.int8: missing key 'threads'"]


def test_a_bench_json_without_rounds_gives_plain_ratios():
    bench = {"variants": {"multihead.int8": {"interpreter_ms": {"p50": 1.0}},
                          "separate.int8": {"interpreter_ms": {"p50": 4.0}}}}
    iv = ratio(bench, ("multihead.int8", "interpreter"), ("separate.int8", "interpreter"))
    assert iv == Interval(0.25, None, None, 0)


def test_cli_defaults_are_the_bench_defaults():
    from edge.bench.run import DEFAULT_MIN_TIME_S, DEFAULT_ROUNDS
    from edge.cli import bench as bench_command

    defaults = {p.name: p.default for p in bench_command.params}
    assert defaults["rounds"] == DEFAULT_ROUNDS and defaults["min_time_s"] == DEFAULT_MIN_TIME_S


def test_busy_warning():
    assert busy_warning(2.5, 2) and "load average 2.50 above 2 cores" in busy_warning(2.5, 2)
    assert busy_warning(1.9, 2) is None and busy_warning(None, 2) is None


def test_latency_stats_keys():
    assert set(latency_stats([1.0, 2.0])) == {"mean", "p50", "p90", "p99", "std"}
    assert latency_stats([]) is None


def test_a_failing_round_is_recorded_and_the_others_kept(edge_fx, tmp_path):
    # A python that refuses round 1 of every variant (the job is the worker's last argument).
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\ncase \"$3\" in *'\"round\": 1,'*) echo 'round refused' >&2; exit 3;; esac\n"
                       f"exec {sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    order = []
    bench = run_bench(edge_fx / "models" / "multihead.int8.tflite", edge_fx / "images", runs=2, warmup=0,
                      rounds=3, min_time_s=0.0, python=str(wrapper), progress=order.append)
    r = bench["variants"]["multihead.int8"]
    assert [x.get("error") is None for x in r["rounds"]] == [True, False, True]
    assert "status 3 round refused" in r["rounds"][1]["error"] and r["failed_rounds"] == 1
    assert r["interpreter_ms"]["p50"] > 0 and r["accuracy"]["n"] == 6  # kept from rounds 0 and 2
    assert r["rounds"][2]["file_to_labels_ms"]["n"] >= 2
    assert [line.split(":")[0] for line in order if line.startswith("[")] == [
        "[1/1] multihead.int8 round 1/3", "[1/1] multihead.int8 round 2/3", "[1/1] multihead.int8 round 3/3"]
    assert bench["machine"] and isinstance(bench["busy"], bool) and len(bench["load_average_start"]) == 3
    json.dumps(bench)  # bench.json is plain JSON
    assert bench_key_errors(bench) == []  # every key the writer wrote is one edge.bench.records names
