"""Stage contracts, end to end: real ``train`` -> ``convert`` -> ``polyhead-edge bench`` -> ``report``
on a tiny learnable dataset, then every number of every Markdown table in report.md (and the setup
lines) is read back and compared with the JSON file it comes from.

The expected cells are computed here, from the JSON files and the .tflite files on disk, with this
file's own lookups and formats: nothing is taken from report.render.markdown, so a row reading the wrong
field, a swapped column, a broken format or a lost row fails here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from report.experiments.paper_data import PAPER_TABLES
from tests import train_fixtures

pytestmark = pytest.mark.slow

APPROACHES = ("multihead", "separate", "joint")
PRECISIONS = ("float32", "int8")
HEADS = ("make", "type")
NOT_MEASURED = "not measured"
BACKBONE = "tiny_cnn"


# -- the run: every stage as a user types it ------------------------------------------------------


def _stage(args: list[Any], timeout: int = 300) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, f"{args[:4]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _edge_cli() -> list[str]:
    script = Path(sys.executable).with_name("polyhead-edge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edge.cli"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by the real stages (about 40 s of CPU on an idle machine)."""
    from report.pipeline import prepare_bench_images

    root = tmp_path_factory.mktemp("e2e")
    data = train_fixtures.write_folder(root / "data", n=64, size=32, seed=0)
    out = root / "run"
    py = sys.executable
    # scratch: every layer trains, so the three approaches end with different numbers (a frozen random
    # base gives multihead and separate identical heads, and a swapped column would pass unseen).
    _stage([py, "-m", "train", "--data", data, "--backbone", BACKBONE, "--out", out, "--image-size", "32",
            "--epochs", "2", "--weights", "none", "--protocol", "scratch", "--seed", "0", "--verbose", "0"])
    _stage([py, "-m", "convert", out, "--precision", ",".join(PRECISIONS), "--calibration", "16", "--no-legacy"])
    images = prepare_bench_images(data, root / "bench_images", 4)
    # Two interleaved rounds: the fewest that give every latency ratio its interval.
    _stage([*_edge_cli(), "bench", out / "edge", "--images", images, "--runs", "3", "--warmup", "1",
            "--rounds", "2", "--min-time", "0", "--out", out / "bench.json"])
    _stage([py, "-m", "report", out, "--no-plots"])
    return out


def _json(run: Path, name: str) -> dict[str, Any]:
    return json.loads((run / name).read_text())


# -- reading the report back ----------------------------------------------------------------------


def parse_tables(markdown: str) -> dict[str, tuple[list[str], dict[str, dict[str, str]]]]:
    """Every table, keyed by the heading above it: (columns, {row label: {column: cell}})."""
    tables: dict[str, tuple[list[str], dict[str, dict[str, str]]]] = {}
    heading, lines, i = "", markdown.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            columns = [c.strip() for c in lines[i].strip("|").split("|")]
            rows: dict[str, dict[str, str]] = {}
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                assert cells[0] not in rows, f"row {cells[0]!r} twice in {heading!r}"
                rows[cells[0]] = dict(zip(columns[1:], cells[1:], strict=True))
                i += 1
            assert heading not in tables, f"two tables under {heading!r}"
            tables[heading] = (columns, rows)
            continue
        i += 1
    return tables


@pytest.fixture(scope="module")
def report(run: Path) -> str:
    return (run / "report.md").read_text()


@pytest.fixture(scope="module")
def tables(report: str) -> dict[str, tuple[list[str], dict[str, dict[str, str]]]]:
    return parse_tables(report)


# -- the expected cells, from the JSON (this file's own lookups and formats) -----------------------


def _at(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj[key]
    return obj


def percent(v: float) -> str:
    return f"{100 * v:.2f} %"


def loss(v: float) -> str:
    return f"{v:.4f}"


def integer(v: float) -> str:
    return f"{int(round(v)):,}"


def megabytes(v: float) -> str:
    return f"{v / 1e6:.3f} MB"


def ms(v: float) -> str:
    return f"{v:.2f} ms"


def rss(v: float) -> str:
    return f"{v:.1f} MB"


def ratio(v: float) -> str:
    return f"{v:.3f}"


INTERVAL_CELL = re.compile(r"(\d+\.\d{3}) \[(\d+\.\d{3}), (\d+\.\d{3})\]( \(no measurable difference\))?")
HALF_UNIT = 0.0005 + 0.00005 + 1e-9
"""A 3-decimal cell against a JSON value rounded to 4 decimals: half a printed unit plus the JSON's rounding."""


def assert_interval_cell(cell: str, interval: dict[str, Any], where: Any) -> None:
    """``0.512 [0.498, 0.527]`` (and the mark when the interval holds 1.0) equals a bench.json interval."""
    m = INTERVAL_CELL.fullmatch(cell)
    assert m, (where, cell)
    for text, key in zip(m.groups()[:3], ("value", "low", "high"), strict=True):
        assert abs(float(text) - interval[key]) <= HALF_UNIT, (where, key, cell, interval)
    crosses = interval["low"] <= 1.0 <= interval["high"]
    assert bool(m.group(4)) == crosses == interval.get("no_measurable_difference", crosses), (where, cell, interval)


def rounds_interval(bench: dict[str, Any], num: tuple[str, str], den: tuple[str, str]) -> dict[str, Any]:
    """A ratio bench.json does not store (multihead / other, file-to-labels), from its rounds: per-round
    p50s paired by round index here; the geometric mean and bootstrap are edge.bench.stats' (the one
    implementation; its own tests check it)."""
    from edge.bench.stats import bootstrap_ratio

    def p50s(vid: str, kind: str) -> dict[int, float]:
        return {r["round"]: r[f"{kind}_ms"]["p50"] for r in bench["variants"][vid]["rounds"] if not r.get("error")}

    a, b = p50s(*num), p50s(*den)
    both = sorted(set(a) & set(b))
    assert len(both) == bench["rounds"], (num, den, both)
    iv = bootstrap_ratio([a[i] for i in both], [b[i] for i in both])
    return {"value": iv.value, "low": iv.low, "high": iv.high}


def disk_bytes(run: Path, approach: str, precision: str) -> int:
    """Bytes of an approach's .tflite files at a precision, as they lie on disk."""
    files = sorted((run / "edge").glob(f"{approach}.*{precision}.tflite"))
    expected = 2 if approach == "separate" else 1
    assert len(files) == expected, files
    return sum(f.stat().st_size for f in files)


def expected_approach_rows(run: Path) -> dict[str, Callable[[str], str]]:
    """Row label -> (approach -> expected cell) for the per-backbone table."""
    train, convert, bench = (_json(run, n) for n in ("train.json", "convert.json", "bench.json"))

    def tr(fmt: Callable[[float], str], *keys: str) -> Callable[[str], str]:
        return lambda a: fmt(_at(train, "variants", a, *keys))

    def bn(fmt: Callable[[float], str], precision: str, *keys: str) -> Callable[[str], str]:
        return lambda a: fmt(_at(bench, "variants", f"{a}.{precision}", *keys))

    def cv(fmt: Callable[[float], str], precision: str, *keys: str) -> Callable[[str], str]:
        return lambda a: fmt(_at(convert, "variants", f"{a}.{precision}", "check", *keys))

    rows: dict[str, Callable[[str], str]] = {}
    for h in HEADS:
        rows[f"{h} accuracy (test)"] = tr(percent, "metrics", "test", "heads", h, "accuracy")
        rows[f"{h} loss (test)"] = tr(loss, "metrics", "test", "heads", h, "loss")
    rows["test images"] = tr(integer, "metrics", "test", "n")
    rows["unseen-combination test images"] = tr(integer, "metrics", "test_unseen", "n")
    rows["joint accuracy (test)"] = tr(percent, "metrics", "test", "joint_accuracy")
    rows["joint accuracy (unseen combinations)"] = tr(percent, "metrics", "test_unseen", "joint_accuracy")
    for h in HEADS:
        rows[f"{h} accuracy (unseen combinations)"] = tr(percent, "metrics", "test_unseen", "heads", h, "accuracy")
    for p in PRECISIONS:
        rows[f"size {p}"] = lambda a, p=p: megabytes(disk_bytes(run, a, p))
    rows["parameters"] = tr(integer, "params", "total")
    rows["trained parameters"] = tr(integer, "params", "trainable")
    rows["trained-layer MACC"] = tr(integer, "macc", "trained")
    rows["total MACC"] = tr(integer, "macc", "total")
    for p in PRECISIONS:
        rows[f"latency p50 {p}, interpreter"] = bn(ms, p, "interpreter_ms", "p50")
        rows[f"latency p50 {p}, file-to-labels"] = bn(ms, p, "file_to_labels_ms", "p50")
    for p in PRECISIONS:
        rows[f"peak RSS {p}"] = bn(rss, p, "peak_rss_mb")
    for p in PRECISIONS:
        for h in HEADS:
            rows[f"{h} accuracy, tflite {p} (test)"] = cv(percent, p, "heads", h, "accuracy")
        rows[f"joint accuracy, tflite {p} (test)"] = cv(percent, p, "joint_accuracy")
    return rows


def _value(run: Path, approach: str, quantity: str) -> float:
    """A quantity of one approach, for the ratio tables: ``latency:<precision>:<kind>``, ``size:<p>``,
    ``macc:<total|trained>``."""
    kind, *rest = quantity.split(":")
    if kind == "latency":
        return _at(_json(run, "bench.json"), "variants", f"{approach}.{rest[0]}", f"{rest[1]}_ms", "p50")
    if kind == "size":
        return disk_bytes(run, approach, rest[0])
    return _at(_json(run, "train.json"), "variants", approach, "macc", rest[0])


RATIO_ROWS = {
    "latency p50 float32, interpreter": ("latency:float32:interpreter", None),
    "latency p50 float32, file-to-labels": ("latency:float32:file_to_labels", "latency_s"),
    "latency p50 int8, interpreter": ("latency:int8:interpreter", None),
    "latency p50 int8, file-to-labels": ("latency:int8:file_to_labels", None),
    "size float32": ("size:float32", "size_mb"),
    "size int8": ("size:int8", None),
    "total MACC": ("macc:total", None),
    "trained-layer MACC": ("macc:trained", None),
}
"""Ratio row -> (our quantity, the paper's comparable quantity or None)."""


# -- the tests ------------------------------------------------------------------------------------


def test_the_report_has_exactly_the_tables_checked_here(tables) -> None:
    assert set(tables) == {BACKBONE, f"Ratios multihead / separate ({BACKBONE})",
                           f"Ratios multihead / joint ({BACKBONE})", f"int8 against float32 ({BACKBONE})"}


def test_the_run_tells_the_approaches_apart(run: Path) -> None:
    """The data must be able to catch a swapped column: the approaches' numbers differ."""
    train = _json(run, "train.json")
    for key in (("metrics", "test", "heads", "make", "loss"), ("params", "total")):
        values = [_at(train, "variants", a, *key) for a in APPROACHES]
        assert len(set(values)) == 3, (key, values)
    assert _at(train, "variants", "multihead", "metrics", "test_unseen", "n") > 0


def test_every_cell_of_the_approach_table_equals_its_json(run: Path, tables) -> None:
    columns, rows = tables[BACKBONE]
    assert columns == ["metric", *APPROACHES]
    expected = expected_approach_rows(run)
    assert list(rows) == list(expected)  # every row checked, in the renderer's order
    for label, cell_of in expected.items():
        for a in APPROACHES:
            assert rows[label][a] == cell_of(a), (label, a)


def test_every_stage_wrote_the_keys_edge_records_names(run: Path) -> None:
    """A key renamed in one stage and not in the types fails here, not as a "not measured" cell."""
    from convert.records import convert_key_errors
    from edge.bench.records import bench_key_errors
    from train.records import train_key_errors

    assert train_key_errors(_json(run, "train.json")) == []
    assert convert_key_errors(_json(run, "convert.json")) == []
    assert bench_key_errors(_json(run, "bench.json")) == []


def test_sizes_in_convert_json_are_the_files_on_disk(run: Path) -> None:
    convert = _json(run, "convert.json")
    for a in APPROACHES:
        for p in PRECISIONS:
            assert convert["variants"][f"{a}.{p}"]["bytes"] == disk_bytes(run, a, p), (a, p)


def test_convert_checks_the_same_keras_accuracy_train_reported(run: Path) -> None:
    """The two stages' Keras accuracies on the test split are one number (same images, same model)."""
    train, convert = _json(run, "train.json"), _json(run, "convert.json")
    for a in APPROACHES:
        test = train["variants"][a]["metrics"]["test"]
        for p in PRECISIONS:
            check = convert["variants"][f"{a}.{p}"]["check"]
            assert check["n"] == test["n"]
            for h in HEADS:
                assert check["heads"][h]["keras_accuracy"] == pytest.approx(test["heads"][h]["accuracy"], abs=1e-6)


@pytest.mark.parametrize("denominator", ["separate", "joint"])
def test_every_cell_of_the_ratio_tables_equals_its_json(run: Path, tables, denominator: str) -> None:
    columns, rows = tables[f"Ratios multihead / {denominator} ({BACKBONE})"]
    papers = [f"paper {p.backbone}" for p in PAPER_TABLES]
    assert columns == ["quantity", "this run", *papers]
    assert list(rows) == list(RATIO_ROWS)
    bench = _json(run, "bench.json")
    for label, (quantity, paper_quantity) in RATIO_ROWS.items():
        kind, *rest = quantity.split(":")
        if kind == "latency":  # paired over bench rounds, with an interval
            precision, latency_kind = rest
            if latency_kind == "interpreter":
                interval = bench["ratios"][f"latency multihead/{denominator} {precision}"]
            else:
                interval = rounds_interval(bench, (f"multihead.{precision}", latency_kind),
                                           (f"{denominator}.{precision}", latency_kind))
            assert_interval_cell(rows[label]["this run"], interval, label)
        else:
            ours = _value(run, "multihead", quantity) / _value(run, denominator, quantity)
            assert rows[label]["this run"] == ratio(ours), label
        for paper, column in zip(PAPER_TABLES, papers, strict=True):
            want = "-" if paper_quantity is None else ratio(
                getattr(paper, paper_quantity)["multihead"] / getattr(paper, paper_quantity)[denominator])
            assert rows[label][column] == want, (label, column)


def test_every_cell_of_the_int8_against_float32_table_equals_its_json(run: Path, tables) -> None:
    columns, rows = tables[f"int8 against float32 ({BACKBONE})"]
    assert columns == ["ratio", *APPROACHES]
    ratios = _json(run, "bench.json")["ratios"]
    intervals = {
        "latency p50 int8 / float32, interpreter": lambda a: ratios[f"latency int8/float32 {a}"],
        **{f"file-to-labels / interpreter p50, {p}":
           (lambda a, p=p: ratios[f"file-to-labels/interpreter {a}.{p}"]) for p in PRECISIONS},
        **{f"file-to-labels / max(decode, interpreter) p50, {p}":
           (lambda a, p=p: ratios[f"file-to-labels/max(decode, interpreter) {a}.{p}"]) for p in PRECISIONS},
    }
    size = "size int8 / float32"
    assert list(rows) == [*list(intervals)[:1], size, *list(intervals)[1:]]
    for a in APPROACHES:
        assert rows[size][a] == ratio(disk_bytes(run, a, "int8") / disk_bytes(run, a, "float32")), a
        for label, interval_of in intervals.items():
            assert_interval_cell(rows[label][a], interval_of(a), (label, a))


def _setup_lines(report: str) -> list[str]:
    section = report.split(f"### Setup ({BACKBONE})", 1)[1].split("\n### ", 1)[0]
    return [line for line in section.strip().splitlines() if line]


def test_setup_lines_equal_config_bench_train_and_convert(run: Path, report: str) -> None:
    from report.render.markdown import compose_lines

    config, train, convert, bench = (_json(run, n) for n in ("config.json", "train.json", "convert.json",
                                                             "bench.json"))
    size = "x".join(str(v) for v in config["image_size"])
    expected = [
        f"- run folder: `{run}`",
        f"- data: `{config['data']}`",
        f"- backbone: {train['backbone']}; input {size}; weights: {config['weights']}",
        "- training: " + ", ".join(f"{k}={config[k]}" for k in ("epochs", "batch_size", "learning_rate", "seed",
                                                                 "freeze_base", "compose")),
        *compose_lines(train),
        *([f"- fold validation: {train['pair_folds']['folds']} folds, each retraining the heads without whole "
           "pairs (held out: " + "; ".join(", ".join(f) for f in train["pair_folds"]["held_out"]) + ")"]
          if train.get("pair_folds", {}).get("held_out") else []),
        f"- machine: {bench['board']}; CPU: {bench['cpu']}; governor: {bench['governor']}",
        f"- runtime: {bench['runtime']} {bench['runtime_version']}; threads: {bench['threads']}",
        *(f"- bench {k}: {bench[k]}" for k in ("runs", "warmup", "rounds", "min_time_s", "images", "machine")),
        f"- bench load average: {', '.join(map(str, bench['load_average_start']))} at the start, at most "
        f"{bench['load1_max']} over {bench['cpu_count']} cores; busy: {'YES' if bench['busy'] else 'no'}",
        *(f"- bench warning: {w}" for w in bench["warnings"]),
        "- train versions: " + ", ".join(f"{k} {v}" for k, v in train["versions"].items()),
        "- convert versions: " + ", ".join(f"{k} {v}" for k, v in convert["versions"].items()),
    ]
    assert _setup_lines(report) == expected
    # The settings the run was asked for reached config.json (so the lines above are about this run).
    assert (config["epochs"], config["seed"], config["image_size"], config["weights"]) == (2, 0, [32, 32], "none")
    assert (bench["runs"], bench["warmup"], bench["threads"], bench["rounds"]) == (3, 1, 1, 2)


def test_every_number_in_the_report_is_accounted_for(report: str, tables) -> None:
    """No table row outside the ones above carries a number: a new row must get a check here."""
    checked = sum(len(rows) for _, rows in tables.values())
    table_lines = [line for line in report.splitlines() if line.startswith("|") and not line.startswith("|---")]
    assert len(table_lines) == checked + len(tables)  # rows + one header per table
    assert re.search(r"\bnan\b|\binf\b", report) is None
