"""The report and make bench print ratios with their intervals from bench rounds (edge.bench.stats),
mark an interval crossing 1.0, and say when the bench machine was busy. Hand-made rounds, no models."""

from __future__ import annotations

import json
from pathlib import Path

from report_fixtures import write_run

from edge.bench.run import summarise_variant
from edge.bench.stats import bench_ratios
from report.benchmarks.suite import ratio_table as suite_table
from report.render.build import write_report


class _V:
    def __init__(self, approach: str, precision: str):
        self.variant, self.approach, self.precision = approach, approach, precision
        self.files, self.bytes = (Path(f"{approach}.{precision}.tflite"),), 1000


def _raw(ms: float) -> dict:
    return {"load_ms": 1.0, "first_inference_ms": 2.0, "peak_rss_mb": 40.0, "interpreter_samples": [ms] * 3,
            "invoke_samples": [ms * 0.9] * 3, "decode_samples": [ms / 2] * 3,
            "file_to_labels_samples": [ms * 1.05] * 3, "decode_failures": 0, "stream_errors": 0}


def _bench(busy: bool) -> dict:
    # multihead vs separate: clearly 0.5 in every round; multihead vs joint: 0.9 then 1.1 (geometric mean 0.995, crosses 1.0).
    per_round = {"multihead": [1.0, 1.0], "separate": [2.0, 2.0], "joint": [1.0 / 0.9, 1.0 / 1.1]}
    variants = {}
    for approach, values in per_round.items():
        for precision, scale in (("float32", 1.0), ("int8", 0.5)):
            raws = [(r, 0.5, _raw(v * scale)) for r, v in enumerate(values)]
            variants[f"{approach}.{precision}"] = summarise_variant(_V(approach, precision), raws)
    bench = {"board": "b", "cpu": "c", "machine": "x86_64", "governor": "unknown", "runtime": "ai-edge-litert",
             "runtime_version": "2.3.0", "threads": 1, "rounds": 2, "min_time_s": 1.0, "cpu_count": 2,
             "load_average_start": [3.0, 2.0, 1.0], "load1_max": 3.5 if busy else 0.5, "busy": busy,
             "warnings": ["machine busy: load average 3.50 above 2 cores"] if busy else [], "variants": variants}
    bench["ratios"] = {k: v.to_dict() for k, v in bench_ratios(bench).items()}
    return bench


def test_report_prints_intervals_marks_crossing_one_and_busy(tmp_path):
    run = write_run(tmp_path / "run")
    (run / "bench.json").write_text(json.dumps(_bench(busy=True)))
    text = write_report([run]).read_text()
    rows = [line for line in text.splitlines()  # the two ratio tables' rows (the first table has ms)
            if line.startswith("| latency p50 float32, interpreter |") and " ms |" not in line]
    assert rows[0].split("|")[2].strip() == "0.500 [0.500, 0.500]"  # multihead / separate
    assert "no measurable difference" in rows[1] and "[0.900, 1.100]" in rows[1]  # multihead / joint
    assert "| latency p50 int8 / float32, interpreter | 0.500 [0.500, 0.500] |" in text
    assert "busy: YES" in text and "bench warning: machine busy" in text and "bench rounds: 2" in text


def test_make_bench_table_uses_the_same_intervals():
    bench = _bench(busy=False)
    results = {"ratios": dict(bench["ratios"]), "machine": {"platform": "linux"}, "threads": 1, "how": {},
               "bench": {k: bench[k] for k in ("machine", "rounds", "min_time_s", "load_average_start",
                                               "load1_max", "busy")}}
    text = suite_table(results)
    assert "latency multihead/separate float32" in text and "0.500 [0.500, 0.500]" in text
    line = next(x for x in text.splitlines() if x.startswith("latency multihead/joint float32"))
    assert "0.995 [0.900, 1.100]" in line and "no measurable difference" in line
    assert "BUSY" not in text


def test_make_bench_records_the_edge_bench_ratios(tmp_path):
    from report.benchmarks.suite import record_edge_bench

    (tmp_path / "train.json").write_text(json.dumps({"variants": {"multihead": {"macc": {"total": 1e6}}}}))
    results = {"ratios": {}, "how": {}, "machine": {"platform": "linux"}, "threads": 1}
    bench = _bench(busy=True)
    record_edge_bench(results, bench, tmp_path, threads=1, fma_units=2)
    assert results["ratios"]["latency multihead/separate int8"] == bench["ratios"]["latency multihead/separate int8"]
    assert results["ratios"]["size int8/float32 multihead"] == 1.0
    assert results["achieved_gmacs"] == 1.0  # 1e6 MACC in the float32 multihead's 1.0 ms p50
    assert results["bench"]["busy"] is True and "errors" not in results
    assert "BUSY" in suite_table(results)


def test_latency_plot_reads_the_rounds_histograms():
    from report.render.plots import latency_samples

    record = _bench(busy=False)["variants"]["separate.float32"]  # 2 rounds x 3 samples of 2.0 ms
    samples = latency_samples(record, "interpreter")
    assert len(samples) == 6 and all(abs(s - 2.0) / 2.0 < 0.024 for s in samples)
