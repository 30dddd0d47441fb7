"""The report renders from the stages' JSON alone, and its numbers are the JSON's numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from report_fixtures import bench_json, convert_json, train_json, write_run

from report.experiments.paper_data import PAPER_TABLES
from report.render.build import write_report
from report.render.markdown import NOT_MEASURED, ReportError, load_run


def parse_tables(markdown: str) -> dict[str, dict[str, dict[str, str]]]:
    """Every Markdown table, keyed by the heading above it: {heading: {row label: {column: cell}}}."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    heading = ""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            columns = [c.strip() for c in line.strip("|").split("|")]
            rows: dict[str, dict[str, str]] = {}
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip("|").split("|")]
                rows[cells[0]] = dict(zip(columns[1:], cells[1:], strict=True))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


def parse_cell(text: str) -> float | None:
    """Invert the report's formats: '91.23 %', '9.051 MB', '2,261,000', '10.00 ms', '0.513'."""
    if text in (NOT_MEASURED, "-"):
        return None
    m = re.fullmatch(r"(-?[\d,]+(?:\.\d+)?)\s*(%|MB|M|ms)?", text)
    assert m, f"unparseable cell {text!r}"
    value = float(m.group(1).replace(",", ""))
    unit = m.group(2)
    if unit == "%":
        return value / 100
    if unit == "M":
        return value * 1e6
    return value


def close(cell: str, expected: float, rel: float = 0.0, abs_: float = 0.0) -> bool:
    value = parse_cell(cell)
    return value is not None and abs(value - expected) <= max(abs_, rel * abs(expected))


@pytest.fixture()
def full_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


def test_report_numbers_match_the_json(full_run: Path) -> None:
    path = write_report([full_run], plots=False)
    tables = parse_tables(path.read_text())
    table = tables["mobilenet_v2"]
    train, convert, bench = train_json(), convert_json(), bench_json()
    for approach in ("multihead", "separate", "joint"):
        v = train["variants"][approach]
        test = v["metrics"]["test"]
        for head in ("make", "type"):
            assert close(table[f"{head} accuracy (test)"][approach], test["heads"][head]["accuracy"], abs_=5e-5)
            assert close(table[f"{head} loss (test)"][approach], test["heads"][head]["loss"], abs_=5e-5)
            unseen = v["metrics"]["test_unseen"]["heads"][head]["accuracy"]
            assert close(table[f"{head} accuracy (unseen combinations)"][approach], unseen, abs_=5e-5)
        assert close(table["joint accuracy (test)"][approach], test["joint_accuracy"], abs_=5e-5)
        assert close(table["test images"][approach], test["n"])
        assert close(table["unseen-combination test images"][approach], v["metrics"]["test_unseen"]["n"])
        assert close(table["joint accuracy (unseen combinations)"][approach],
                     v["metrics"]["test_unseen"]["joint_accuracy"], abs_=5e-5)
        assert close(table["parameters"][approach], v["params"]["total"])
        assert close(table["trained parameters"][approach], v["params"]["trainable"])
        assert close(table["total MACC"][approach], v["macc"]["total"], abs_=0.5)
        assert close(table["trained-layer MACC"][approach], v["macc"]["trained"], abs_=0.5)
        for precision in ("float32", "int8"):
            nbytes = sum(f["bytes"] for f in convert["files"].values()
                         if f["approach"] == approach and f["precision"] == precision)
            assert close(table[f"size {precision}"][approach], nbytes / 1e6, abs_=5e-4)
            b = bench["variants"][f"{approach}.{precision}"]
            assert close(table[f"latency p50 {precision}, interpreter"][approach], b["interpreter_ms"]["p50"], abs_=5e-3)
            assert close(table[f"latency p50 {precision}, file-to-labels"][approach],
                         b["file_to_labels_ms"]["p50"], abs_=5e-3)
            assert close(table[f"peak RSS {precision}"][approach], b["peak_rss_mb"], abs_=0.05)
            check = convert["variants"][f"{approach}.{precision}"]["check"]
            assert close(table[f"joint accuracy, tflite {precision} (test)"][approach], check["joint_accuracy"],
                         abs_=5e-5)
            for head in ("make", "type"):
                assert close(table[f"{head} accuracy, tflite {precision} (test)"][approach],
                             check["heads"][head]["accuracy"], abs_=5e-5)


def test_ratios_match_the_json_and_the_paper(full_run: Path) -> None:
    tables = parse_tables(write_report([full_run], plots=False).read_text())
    bench, convert, train = bench_json(), convert_json(), train_json()
    for denominator in ("separate", "joint"):
        ratios = tables[f"Ratios multihead / {denominator} (mobilenet_v2)"]
        for precision in ("float32", "int8"):
            want = (bench["variants"][f"multihead.{precision}"]["interpreter_ms"]["p50"]
                    / bench["variants"][f"{denominator}.{precision}"]["interpreter_ms"]["p50"])
            assert close(ratios[f"latency p50 {precision}, interpreter"]["this run"], want, abs_=5e-4)

            def size(a: str, p: str = precision) -> int:
                return sum(f["bytes"] for f in convert["files"].values() if f["approach"] == a and f["precision"] == p)

            assert close(ratios[f"size {precision}"]["this run"], size("multihead") / size(denominator), abs_=5e-4)
        macc = train["variants"]["multihead"]["macc"]["total"] / train["variants"][denominator]["macc"]["total"]
        assert close(ratios["total MACC"]["this run"], macc, abs_=5e-4)
        for paper in PAPER_TABLES:
            column = f"paper {paper.backbone}"
            want = paper.latency_s["multihead"] / paper.latency_s[denominator]
            assert close(ratios["latency p50 float32, file-to-labels"][column], want, abs_=5e-4)
            want = paper.size_mb["multihead"] / paper.size_mb[denominator]
            assert close(ratios["size float32"][column], want, abs_=5e-4)
            assert ratios["total MACC"][column] == "-"


def test_paper_figures_are_the_published_ones() -> None:
    figures = {p.backbone: (p.latency_s, p.size_mb) for p in PAPER_TABLES}
    assert figures["AlexNet"][0] == {"multihead": 17.215, "separate": 35.498, "joint": 17.693}
    assert figures["GoogLeNet"][0] == {"multihead": 3.178, "separate": 7.265, "joint": 3.277}
    assert figures["SqueezeNet"][0] == {"multihead": 6.466, "separate": 12.848, "joint": 6.512}
    assert figures["AlexNet"][1] == {"multihead": 223.0, "separate": 445.2, "joint": 445.2}
    assert figures["GoogLeNet"][1] == {"multihead": 40.9, "separate": 95.6, "joint": 48.6}
    assert figures["SqueezeNet"][1] == {"multihead": 2.9, "separate": 5.7, "joint": 3.0}


def test_the_fixtures_use_only_keys_the_writers_write() -> None:
    """The fixtures leave keys out (the report must cope), but a key the writers renamed in
    train.records / edge.bench.records must be renamed here too, or these tests read a ghost."""
    from edge.bench.records import bench_key_errors
    from train.records import train_key_errors

    errors = train_key_errors(train_json()) + bench_key_errors(bench_json())
    assert [e for e in errors if "unknown key" in e] == []


def test_missing_stages_render_as_not_measured(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", bench=False, convert=False)
    (run / "predictions.json").unlink()
    text = write_report([run]).read_text()
    table = parse_tables(text)["mobilenet_v2"]
    assert table["latency p50 int8, interpreter"]["multihead"] == NOT_MEASURED
    assert table["size float32"]["separate"] == NOT_MEASURED
    assert table["make accuracy (test)"]["multihead"] != NOT_MEASURED
    assert "no bench.json" in text


def test_broken_json_is_a_problem_line_not_a_crash(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    (run / "bench.json").write_text("{not json")
    text = write_report([run], plots=False).read_text()
    assert "bench.json: unreadable JSON" in text
    assert parse_tables(text)["mobilenet_v2"]["peak RSS int8"]["joint"] == NOT_MEASURED


def test_not_a_run_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no config.json"):
        write_report([tmp_path])
    with pytest.raises(ReportError, match="does not exist"):
        load_run(tmp_path / "nope")


def test_plots_are_written_and_linked(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", samples=True)
    text = write_report([run]).read_text()
    for name in ("accuracy_vs_latency", "size", "latency", "confusion_make", "confusion_type"):
        png = run / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](plots/{name}.png)" in text


def test_latency_plot_from_percentiles_only(tmp_path: Path) -> None:
    from PIL import Image

    from report.render.plots import plot_latency_distribution

    run = load_run(write_run(tmp_path / "run", samples=False))
    png = plot_latency_distribution(run, tmp_path / "lat.png")
    assert png == tmp_path / "lat.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The percentile drawing, not the raw-sample one: the same run with samples draws another picture.
    with_samples = plot_latency_distribution(load_run(write_run(tmp_path / "s", samples=True)), tmp_path / "s.png")
    with Image.open(png) as a, Image.open(with_samples) as b:
        assert a.size == b.size and a.tobytes() != b.tobytes()
    # Nothing to draw without bench.json: no file, not an empty plot.
    assert plot_latency_distribution(load_run(write_run(tmp_path / "nb", bench=False)), tmp_path / "nb.png") is None
    assert not (tmp_path / "nb.png").exists()


def test_a_folder_of_runs_gives_one_report_with_every_table(tmp_path: Path) -> None:
    for backbone in ("alexnet", "squeezenet"):
        run = write_run(tmp_path / "paper" / backbone, bench=False)
        train = json.loads((run / "train.json").read_text())
        train["backbone"] = backbone
        (run / "train.json").write_text(json.dumps(train))
    text = write_report([tmp_path / "paper"], plots=True).read_text()
    tables = parse_tables(text)
    assert "alexnet" in tables and "squeezenet" in tables
    assert (tmp_path / "paper" / "plots" / "alexnet_size.png").exists()
    assert "](plots/squeezenet_confusion_make.png)" in text


def test_cli_prints_the_report_path(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from report.__main__ import main

    run = write_run(tmp_path / "run")
    result = CliRunner().invoke(main, [str(run), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.md")
    bad = CliRunner().invoke(main, [str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
