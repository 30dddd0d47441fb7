"""``make bench``: the performance suite. Every ratio below is measured in one invocation, one machine.

- multihead / separate and multihead / joint latency (polyhead-edge bench, interpreter p50);
- int8 / float32 latency and size;
- file-to-labels over interpreter-only time;
- feature-cached over frozen-fit head training time (train.bench);
- edge peak RSS over a TensorFlow process running the same .tflite;
- achieved multiply-accumulates per second over the CPU's peak.

The models come from a finished run (``--run``, default runs/default, as ``make all`` leaves it);
when that run has no deployment, a small one is made in build/bench-suite (a few hundred synthetic images,
one epoch: latency and size do not depend on how well the weights are trained). Each measurement
runs in its own subprocess; one that fails is recorded with its error and the rest go on.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from artifacts.layout import RunLayout
from edge.bench.run import DEFAULT_MIN_TIME_S, DEFAULT_ROUNDS
from edge.bench.stats import Interval, bench_ratios
from edge.errors import PolyheadError
from edge.io import atomic_write_json
from edge.log import configure_logging

# Peak RSS of a Python process running one .tflite, with or without TensorFlow imported first.
# ``ru_maxrss`` is the kernel's high-water mark of the process's resident set (KiB on Linux).
RSS_SCRIPT = r"""
import json, resource, sys, time
import numpy as np
path, runs, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
api = None
if mode == "tensorflow":
    import tensorflow as tf
    try:
        interp = tf.lite.Interpreter(model_path=path, num_threads=threads)
        api = f"tf.lite.Interpreter (tensorflow {tf.__version__})"
    except Exception as e:  # the in-TF interpreter is deprecated; fall back to LiteRT, TF still imported
        from ai_edge_litert.interpreter import Interpreter
        interp = Interpreter(model_path=path, num_threads=threads)
        api = f"ai_edge_litert under tensorflow {tf.__version__} import ({type(e).__name__})"
else:
    from edge.runtime.interpreter import load_interpreter_class
    cls, name, version = load_interpreter_class()
    interp = cls(model_path=path, num_threads=threads)
    api = f"{name} {version} (edge, no tensorflow)"
runner = interp.get_signature_runner()
detail = runner.get_input_details()["image"]
x = np.random.default_rng(0).integers(0, 256, detail["shape"]).astype(detail["dtype"])
runner(image=x)
start = time.perf_counter()
for _ in range(runs):
    runner(image=x)
ms = (time.perf_counter() - start) * 1000 / runs
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "api": api,
                  "mean_ms": ms, "tensorflow_imported": "tensorflow" in sys.modules}))
"""


@dataclass(frozen=True)
class CpuPeak:
    """The CPU's peak fp32 multiply-accumulates per second and how it was derived."""

    cores: int
    ghz: float
    fma_units: int
    simd_lanes: int
    how: str

    @property
    def macs_per_s(self) -> float:
        return self.cores * self.ghz * 1e9 * self.fma_units * self.simd_lanes


def cpu_peak(threads: int, cpuinfo: str | None = None, fma_units: int | None = None) -> CpuPeak:
    """cores used x GHz x FMA units x fp32 SIMD lanes, from /proc/cpuinfo.

    Lanes come from the widest vector flag (avx512f: 16, avx2/avx: 8, sse2 or ARM asimd/neon: 4).
    FMA units per core are not in /proc/cpuinfo: 2 is assumed on x86 with the ``fma`` flag (Intel
    since Haswell, AMD since Zen), 1 otherwise; AMD family 25 (Zen 3/4) runs 512-bit ops on 256-bit
    units, so it counts 8 lanes. GHz is the highest ``cpu MHz`` listed (cpufreq's max when present).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags |= set(line.split(":", 1)[1].split())
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)]
    ghz, ghz_source = (max(mhz) / 1000, "cpu MHz in /proc/cpuinfo") if mhz else (0.0, "unknown")
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.exists():
        try:
            ghz, ghz_source = int(max_freq.read_text()) / 1e6, "cpufreq cpuinfo_max_freq"
        except (OSError, ValueError):
            pass
    family = re.search(r"^cpu family\s*:\s*(\d+)", cpuinfo, re.M)
    amd = "AuthenticAMD" in cpuinfo
    if "avx512f" in flags and not (amd and family and int(family.group(1)) == 25):
        lanes, lane_source = 16, "avx512f"
    elif "avx512f" in flags:
        lanes, lane_source = 8, "avx512f on AMD family 25 (256-bit datapath)"
    elif flags & {"avx2", "avx"}:
        lanes, lane_source = 8, "avx2" if "avx2" in flags else "avx"
    elif flags & {"sse2", "asimd", "neon"}:
        lanes, lane_source = 4, sorted(flags & {"sse2", "asimd", "neon"})[0]
    else:
        lanes, lane_source = 1, "no SIMD flag found"
    if fma_units is None:
        fma_units = 2 if "fma" in flags else 1
        fma_source = "assumed 2 (x86 fma flag)" if "fma" in flags else "assumed 1"
    else:
        fma_source = "given"
    cores = max(1, min(threads, os.cpu_count() or 1))
    how = (f"{cores} core(s) used x {ghz:.3f} GHz ({ghz_source}) x {fma_units} FMA units ({fma_source}) "
           f"x {lanes} fp32 lanes ({lane_source})")
    return CpuPeak(cores, ghz, fma_units, lanes, how)


def _measure(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    """Run one measurement; a failure is recorded under ``errors`` and the suite goes on."""
    click.echo(f"[bench] {name} ...", err=True)
    start = time.perf_counter()
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001 - the suite keeps going whatever one measurement raises
        message = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        results.setdefault("errors", {})[name] = message
        click.echo(f"[bench] {name} failed: {message}", err=True)
        return None
    wall = time.perf_counter() - start
    if wall > 0.1:  # the ratios computed from one bench are instant; record what took time
        results.setdefault("wall_s", {})[name] = round(wall, 2)
    return value


def _run(command: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit {result.returncode}: {' '.join(command[:4])} ...: {tail[0]}")
    return result


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON record in the output")


def measure_rss(path: Path, mode: str, runs: int, threads: int) -> dict[str, Any]:
    """Peak RSS (MB) of a fresh process running ``path``; mode ``edge`` or ``tensorflow``."""
    return _last_json(_run([sys.executable, "-c", RSS_SCRIPT, str(path), str(runs), str(threads), mode],
                           timeout=600).stdout)


def ensure_models(run: Path, work: Path, threads: int) -> tuple[Path, str]:
    """A run with multihead/joint/separate at float32 and int8: ``run`` if complete, else a small fresh one."""
    from edge.contract.card import APPROACHES
    from report.pipeline import PipelineSettings, conversion_done, run_pipeline, training_done

    wanted = {f"{a}.{p}" for a in APPROACHES for p in ("float32", "int8")}
    have, files = set(), RunLayout(run)
    if files.edge_dir.is_dir():
        from edge.runtime.variants import discover

        have = set(discover(files.edge_dir))
    if wanted <= have and files.train_record.exists():
        return run, f"existing run {run}"
    small = work / "run"
    settings = PipelineSettings(data=work / "data", run=small, num_images=480, synth_size=96, image_size=96,
                                epochs=1, holdout_combos=2, threads=threads, bench_runs=5, bench_images=10)
    if not (training_done(settings)[0] and conversion_done(small, settings.precisions)[0]):
        run_pipeline(settings)
    return small, f"made on the spot in {small} (480 synthetic images, 1 epoch; weights barely trained)"


def record_edge_bench(results: dict[str, Any], bench: Mapping[str, Any], model_run: Path, threads: int,
                      fma_units: int | None) -> None:
    """Put the edge bench's facts and ratios into ``results``: the latency ratios with their intervals
    (edge.bench.stats, the code the report and the edge CLI use), size and achieved MAC/s."""
    ratios = results["ratios"]
    results["bench"] = {k: bench.get(k) for k in ("board", "cpu", "machine", "governor", "runtime",
                                                  "runtime_version", "threads", "rounds", "min_time_s",
                                                  "load_average_start", "load1_max", "busy", "warnings")}
    v = bench.get("variants", {})
    for name, interval in bench_ratios(bench).items():
        ratios[name] = interval.to_dict()

    def ratio(name: str, fn: Callable[[], float]) -> None:
        value = _measure(results, name, fn)
        if value is not None:
            ratios[name] = round(value, 4)

    ratio("size int8/float32 multihead",
          lambda: float(v["multihead.int8"]["bytes"]) / float(v["multihead.float32"]["bytes"]))
    results["latency_p50_ms"] = {vid: {"interpreter": (r.get("interpreter_ms") or {}).get("p50"),
                                       "decode": (r.get("decode_ms") or {}).get("p50"),
                                       "file_to_labels": (r.get("file_to_labels_ms") or {}).get("p50"),
                                       "bytes": r.get("bytes"), "peak_rss_mb": r.get("peak_rss_mb")}
                                 for vid, r in v.items()}

    def macs() -> float:
        train = json.loads(RunLayout(model_run).train_record.read_text())
        total = float(train["variants"]["multihead"]["macc"]["total"])
        peak = cpu_peak(threads, fma_units=fma_units)
        achieved = total / (float(v["multihead.float32"]["interpreter_ms"]["p50"]) / 1000)
        results["how"]["macs"] = (f"multihead total MACC {total:,.0f} / float32 interpreter p50; peak = "
                                  f"{peak.how} = {peak.macs_per_s / 1e9:.1f} GMAC/s")
        results["achieved_gmacs"] = round(achieved / 1e9, 3)
        results["peak_gmacs"] = round(peak.macs_per_s / 1e9, 3)
        return achieved / peak.macs_per_s

    ratio("achieved MAC/s / CPU peak (multihead float32)", macs)


def run_suite(out: Path, run: Path, threads: int = 1, runs: int = 50, images: int = 100,
              fma_units: int | None = None, feature_cache: bool = True, rounds: int = DEFAULT_ROUNDS,
              min_time_s: float = DEFAULT_MIN_TIME_S, live_s: float = 30, live_soak_s: float = 60) -> dict[str, Any]:
    """Measure everything, write ``out`` (JSON) and return the results. ``live_s``: seconds per source
    rate of the live figures (0: none); ``live_soak_s``: their memory soak (report.benchmarks.live)."""
    from report.pipeline import edge_cli, prepare_bench_images
    from report.predictions import run_allows_outside_paths

    start = time.perf_counter()
    work = Path("build") / "bench-suite"  # ignored by git; the small run and bench images live here
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count()},
        "threads": threads, "runs": runs, "rounds": rounds, "min_time_s": min_time_s, "ratios": {}, "how": {},
    }
    ratios = results["ratios"]
    source = _measure(results, "models", lambda: ensure_models(run, work, threads))
    if source is None:
        atomic_write_json(out, results)
        return results
    model_run, results["models"] = source[0], source[1]
    results["run"] = str(model_run)
    model_files = RunLayout(model_run)
    config = json.loads(model_files.config.read_text()) if model_files.config.exists() else {}
    data = Path(str(config.get("data", work / "data")))

    def ratio(name: str, fn: Callable[[], float]) -> None:
        value = _measure(results, name, fn)
        if value is not None:
            ratios[name] = round(value, 4)

    def edge_bench() -> dict[str, Any]:
        bench_images = prepare_bench_images(data, work / "images", images, run_allows_outside_paths(model_run, data))
        target = work / "edge_bench.json"
        _run([*edge_cli(), "bench", str(model_files.edge_dir), "--images", str(bench_images), "--runs", str(runs),
              "--rounds", str(rounds), "--min-time", str(min_time_s), "--threads", str(threads),
              "--out", str(target)], timeout=900)
        return json.loads(target.read_text())

    bench = _measure(results, "edge bench", edge_bench)
    if bench:
        record_edge_bench(results, bench, model_run, threads, fma_units)

    int8_file = model_files.tflite("multihead", "int8")

    def rss() -> float:
        edge_rss = measure_rss(int8_file, "edge", runs, threads)
        tf_rss = measure_rss(int8_file, "tensorflow", runs, threads)
        results["rss"] = {"file": str(int8_file), "edge": edge_rss, "tensorflow": tf_rss}
        results["how"]["rss"] = ("ru_maxrss of a fresh Python process that loads the file and runs it "
                                 f"{runs} times: edge = edge's interpreter only; tensorflow = imports "
                                 f"tensorflow and runs it with {tf_rss['api']}")
        return edge_rss["peak_rss_mb"] / tf_rss["peak_rss_mb"]

    ratio("edge peak RSS / tensorflow peak RSS", rss)
    if feature_cache:
        ratio("feature-cached / frozen-fit training time", lambda: feature_cache_ratio(results, config))
    if live_s > 0:
        def live() -> dict[str, Any]:
            from report.benchmarks.live import run_live_bench

            bench_images = prepare_bench_images(data, work / "images", images,
                                                run_allows_outside_paths(model_run, data))
            return run_live_bench(RunLayout(model_run).edge_dir, bench_images, seconds=live_s, soak_s=live_soak_s,
                                  threads=threads, work=work / "live")

        figures = _measure(results, "live", live)
        if figures is not None:
            results["live"] = figures
    results["total_wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_json(out, results)
    return results


FEATURE_CACHE_SCRIPT = r"""
import json, sys
from train.bench import feature_cache_speedup
print(json.dumps(feature_cache_speedup(**json.loads(sys.argv[1]))))
"""


def feature_cache_ratio(results: dict[str, Any], config: Mapping[str, Any], n_images: int = 2048,
                        epochs: int = 5) -> float:
    """Wall time of feature-cached head training over fitting the frozen full model (train.bench).

    Same backbone and input size as the measured run; random images (the time does not depend on
    their content); E epochs, so the cached path's limit is 1/E.
    """
    size = config.get("image_size") or [96, 96]
    kwargs = {"backbone": config.get("backbone", "mobilenet_v2"), "image_size": int(size[0]),
              "n_images": n_images, "epochs": epochs}
    record = _last_json(_run([sys.executable, "-c", FEATURE_CACHE_SCRIPT, json.dumps(kwargs)], timeout=900).stdout)
    results["feature_cache"] = record
    results["how"]["feature cache"] = (
        f"train.bench.feature_cache_speedup({', '.join(f'{k}={v}' for k, v in kwargs.items())}), random "
        f"images: frozen full model {record['full_fit_s']} s vs cached features {record['feature_cache_s']} s "
        f"= speed-up {record['speedup']} (limit {epochs}, target {0.8 * epochs:g})")
    return float(record["feature_cache_s"]) / float(record["full_fit_s"])


def _ratio_text(value: Any) -> str:
    """A plain ratio as 0.512; an interval record (edge.bench.stats) as ``0.512 [0.498, 0.527]``."""
    if isinstance(value, Mapping):
        iv = Interval(value["value"], value.get("low"), value.get("high"), int(value.get("rounds") or 0))
        return iv.text() + ("  (no measurable difference)" if iv.crosses_one else "")
    return f"{value:.3f}"


def ratio_table(results: Mapping[str, Any]) -> str:
    """The printed table: one ratio per line (latency ratios with their 95 % interval over rounds),
    then how the less obvious ones were measured."""
    ratios = results.get("ratios", {})
    width = max([len(k) for k in ratios] + [10])
    lines = [f"{'ratio':<{width}}  value [95 % bootstrap interval over rounds]", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {_ratio_text(value)}" for name, value in ratios.items()]
    for name, error in (results.get("errors") or {}).items():
        lines.append(f"{name:<{width}}  FAILED: {error}")
    lines.append("")
    lines.append(f"models: {results.get('models')}")
    bench = results.get("bench") or {}
    lines.append(f"machine: {bench.get('cpu') or results['machine']['platform']} ({bench.get('machine')}); runtime "
                 f"{bench.get('runtime')} {bench.get('runtime_version')}; threads {results.get('threads')}; "
                 f"rounds {bench.get('rounds')} x >= {bench.get('min_time_s')} s")
    if bench.get("load_average_start") is not None:
        lines.append(f"load average {bench['load_average_start']} at the start, at most {bench.get('load1_max')}"
                     f"{': BUSY (above the core count), timings are noisy' if bench.get('busy') else ''}")
    if "achieved_gmacs" in results:
        lines.append(f"achieved {results['achieved_gmacs']} GMAC/s of {results['peak_gmacs']} GMAC/s peak")
    for name, how in (results.get("how") or {}).items():
        lines.append(f"how ({name}): {how}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("bench/results.json"),
              show_default=True)
@click.option("--run", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"),
              show_default=True, help="Run whose models to measure; a small one is made if it has none.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per variant and round, at least.")
@click.option("--rounds", type=int, default=DEFAULT_ROUNDS, show_default=True,
              help="Interleaved rounds per variant, each in a fresh process.")
@click.option("--min-time", "min_time_s", type=float, default=DEFAULT_MIN_TIME_S, show_default=True,
              help="Minimum seconds of timed loops per round.")
@click.option("--images", type=int, default=100, show_default=True, help="Test images for the edge bench.")
@click.option("--fma-units", type=int, default=None, help="FMA units per core (default: assumed from flags).")
@click.option("--no-feature-cache", is_flag=True, help="Skip the training-time measurement.")
@click.option("--live-seconds", "live_s", type=float, default=30, show_default=True,
              help="Live figures: measured seconds per source rate (0: skip them).")
@click.option("--live-soak", "live_soak_s", type=float, default=60, show_default=True,
              help="Live figures: memory soak seconds (the target is stated for 600).")
def main(out: Path, run: Path, threads: int, runs: int, rounds: int, min_time_s: float, images: int,
         fma_units: int | None, no_feature_cache: bool, live_s: float, live_soak_s: float) -> None:
    """Measure the suite's ratios in one run; write OUT and print the table."""
    configure_logging()
    try:
        results = run_suite(out, run, threads, runs, images, fma_units, not no_feature_cache, rounds, min_time_s,
                            live_s, live_soak_s)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(ratio_table(results))
    if results.get("live"):
        from report.benchmarks.live import live_table

        click.echo("\n" + live_table(results["live"]))
    click.echo(f"\n{out}")
    if "ratios" not in results or not results["ratios"]:
        raise click.ClickException("no ratio could be measured (see errors above)")


if __name__ == "__main__":
    main()
