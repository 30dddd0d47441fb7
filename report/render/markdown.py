"""The report: read the JSON a run's stages wrote, build the paper-style tables, render Markdown.

Everything here reads JSON only (config.json, train.json, convert.json, bench.json, and the
pipeline's predictions.json / pipeline.json): no model, no TensorFlow. A stage that has not run
yet, or a figure a stage did not record, renders as ``not measured`` instead of failing, so the
report can be rendered at any point of a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artifacts import layout
from artifacts.layout import RunLayout
from edge.bench.stats import Interval
from edge.bench.stats import ratio as bench_ratio
from edge.contract.approaches import APPROACH_SPECS
from edge.contract.schema import JOINT_OUTPUT
from edge.errors import PolyheadError
from edge.io import JsonFileError, read_json_object
from report.experiments.paper_data import PAPER_CITATION, PAPER_TABLES

APPROACHES = ("multihead", "separate", "joint")
"""Column order of the paper's tables: the proposed design first, then the two alternatives."""
PRECISIONS = ("float32", "int8")
NOT_MEASURED = "not measured"
JSON_FILES = layout.RECORDS


class ReportError(PolyheadError):
    """A run folder cannot be reported on (missing folder, nothing in it)."""


@dataclass(frozen=True)
class RunData:
    """The JSON one run's stages wrote; a file that is absent is None."""

    path: Path
    config: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    convert: dict[str, Any] | None = None
    bench: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    problems: tuple[str, ...] = ()

    @property
    def backbone(self) -> str:
        for source in (self.train, self.config):
            if source and source.get("backbone"):
                return str(source["backbone"])
        return self.path.name

    @property
    def heads(self) -> tuple[str, ...]:
        """Head names in the order train.json lists them (the dataset's column order)."""
        for approach in APPROACHES:
            heads = _get(self.train, "variants", approach, "metrics", "test", "heads")
            if isinstance(heads, Mapping) and heads:
                return tuple(heads)
        if self.predictions and isinstance(self.predictions.get("heads"), Mapping):
            return tuple(self.predictions["heads"])
        return ()


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's object, None); (None, None) if it is absent; (None, the problem) if unreadable."""
    if not path.exists():
        return None, None
    try:
        return read_json_object(path), None
    except JsonFileError as e:
        return None, f"{e}; treated as not measured"


def load_run(path: str | Path) -> RunData:
    """Read every stage's JSON in a run folder; unreadable files become problems, not crashes."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a run folder (it does not exist or is not a directory)")
    found: dict[str, Any] = {}
    problems = []
    for name in JSON_FILES:
        data, problem = _read_json(path / name)
        found[name.removesuffix(".json")] = data
        if problem:
            problems.append(problem)
    return RunData(path=path, problems=tuple(problems), **found)


def find_runs(path: str | Path) -> list[Path]:
    """A run folder, or a folder of run folders (e.g. ``runs/paper/<backbone>``)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: not a run folder (it does not exist or is not a directory)")
    if RunLayout(path).is_run():
        return [path]
    subruns = sorted(
        p for p in path.iterdir() if p.is_dir() and (RunLayout(p).train_record.exists() or RunLayout(p).config.exists())
    )
    if not subruns:
        raise ReportError(f"{path}: no config.json, train.json, convert.json or bench.json here or one level down")
    return subruns


# -- looking figures up -------------------------------------------------------------------------


def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None as soon as a level is absent or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def bench_record(run: RunData, approach: str, precision: str) -> dict[str, Any] | None:
    """bench.json's record of ``<approach>.<precision>`` (a lookup; edge.bench.run measures)."""
    record = _get(run.bench, "variants", f"{approach}.{precision}")
    return dict(record) if isinstance(record, Mapping) else None


def tflite_check(run: RunData, approach: str, precision: str) -> dict[str, Any] | None:
    """convert.json's check of a whole variant (the separate approach's files run as a pair)."""
    check = _get(run.convert, "variants", f"{approach}.{precision}", "check")
    return dict(check) if isinstance(check, Mapping) else None


def tflite_bytes(run: RunData, approach: str, precision: str) -> float | None:
    """Bytes on disk of the approach at a precision (all its files): convert.json's variant, else bench.json."""
    converted = _number(_get(run.convert, "variants", f"{approach}.{precision}", "bytes"))
    return converted if converted is not None else _number(_get(bench_record(run, approach, precision), "bytes"))


def latency_ms(run: RunData, approach: str, precision: str, kind: str = "interpreter", stat: str = "p50") -> float | None:
    """Latency statistic from bench.json; kind is ``interpreter`` or ``file_to_labels``."""
    return _number(_get(bench_record(run, approach, precision), f"{kind}_ms", stat))


def latency_ratio(run: RunData, numerator: tuple[str, str], denominator: tuple[str, str],
                  kind: str = "interpreter", denominator_kind: str | None = None) -> Interval | None:
    """(approach, precision) over (approach, precision) latency p50, paired by bench round, with its
    bootstrap 95 % interval: edge.bench.stats.ratio, the code path ``make bench`` and the edge CLI use."""
    return bench_ratio(run.bench, (".".join(numerator), kind), (".".join(denominator), denominator_kind or kind))


def train_figure(run: RunData, approach: str, *keys: str) -> float | None:
    return _number(_get(run.train, "variants", approach, *keys))


# -- the table ----------------------------------------------------------------------------------


def fmt_percent(v: float) -> str:
    return f"{100.0 * v:.2f} %"


def fmt_loss(v: float) -> str:
    return f"{v:.4f}"


def fmt_mb_bytes(v: float) -> str:
    return f"{v / 1e6:.3f} MB"


def fmt_int(v: float) -> str:
    return f"{int(round(v)):,}"


def fmt_ms(v: float) -> str:
    return f"{v:.2f} ms"


def fmt_mb(v: float) -> str:
    return f"{v:.1f} MB"


def fmt_ratio(v: float | Interval) -> str:
    """A plain ratio as 0.512; a measured one as ``0.512 [0.498, 0.527]``, marked when its interval
    crosses 1.0."""
    if isinstance(v, Interval):
        return v.text() + (" (no measurable difference)" if v.crosses_one else "")
    return f"{v:.3f}"


@dataclass(frozen=True)
class Row:
    """One line of a table: a label, a formatter and the raw value per column."""

    label: str
    values: dict[str, Any]
    """Per column a number, an Interval (latency ratios) or None."""
    fmt: Callable[[Any], str]
    source: str = ""
    missing: dict[str, str] = field(default_factory=dict)
    """Text for an absent value per column, when it is not ``not measured`` (e.g. a paper column)."""

    def cell(self, column: str) -> str:
        v = self.values.get(column)
        return self.missing.get(column, NOT_MEASURED) if v is None else self.fmt(v)


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = field(default=())

    def to_markdown(self, first_header: str = "") -> str:
        lines = [
            "| " + " | ".join((first_header, *self.columns)) + " |",
            "|" + "---|" * (len(self.columns) + 1),
        ]
        for row in self.rows:
            lines.append("| " + " | ".join((row.label, *(row.cell(c) for c in self.columns))) + " |")
        return "\n".join(lines)


def _partially_labelled(run: RunData, heads: tuple[str, ...]) -> bool:
    """True when some head is unlabelled on some test or train rows (train.json's counts)."""
    for a in APPROACHES:
        n = train_figure(run, a, "metrics", "test", "n")
        if n is not None and any(train_figure(run, a, "metrics", "test", "heads", h, "n") not in (None, n)
                                 for h in heads):
            return True
    labelled = _get(run.train, "dataset", "labelled", "train")
    size = _get(run.train, "dataset", "sizes", "train")
    return isinstance(labelled, Mapping) and any(v != size for v in labelled.values())


def _train_row(run: RunData, label: str, fmt: Callable[[float], str], *keys: str) -> Row:
    """A row of one train.json figure per approach (``variants.<approach>.<keys...>``)."""
    return Row(label, {a: train_figure(run, a, *keys) for a in APPROACHES}, fmt, layout.TRAIN_RECORD)


def _joint_and_unseen_rows(run: RunData) -> list[Row]:
    """Joint accuracy on test and on unseen combinations (decoded among the catalogue too, where the
    dataset has one), each head on unseen combinations, and the pair-held-out fold validation."""
    rows = [_train_row(run, "unseen-combination test images", fmt_int, "metrics", "test_unseen", "n"),
            _train_row(run, "joint accuracy (test)", fmt_percent, "metrics", "test", "joint_accuracy"),
            _train_row(run, "joint accuracy (unseen combinations)", fmt_percent, "metrics", "test_unseen",
                       "joint_accuracy")]
    if _get(run.train, "catalogue") is not None:
        # The joint answer decoded among the dataset's catalogue.csv (edge/contract/catalogue.py).
        rows += [_train_row(run, f"joint accuracy, catalogue decode ({title})", fmt_percent, "metrics", split,
                            "joint_accuracy_catalogue")
                 for split, title in (("test", "test"), ("test_unseen", "unseen combinations"))]
    rows += [_train_row(run, f"{head} accuracy (unseen combinations)", fmt_percent, "metrics", "test_unseen",
                        "heads", head, "accuracy") for head in run.heads]
    if any(train_figure(run, a, "pair_folds", "unseen", "n") is not None for a in APPROACHES):
        # Pair-held-out validation (train/pairfold.py): the heads retrained without whole pairs.
        for part, title in (("unseen", "held-out pairs"), ("seen", "seen pairs")):
            rows.append(_train_row(run, f"joint accuracy (fold validation, {title})", fmt_percent, "pair_folds",
                                   part, "joint_accuracy"))
            rows += [_train_row(run, f"{head} accuracy (fold validation, {title})", fmt_percent, "pair_folds",
                                part, "heads", head, "accuracy") for head in run.heads]
    return rows


def approach_table(run: RunData) -> Table:
    """The paper's table for one backbone: one column per approach."""
    rows: list[Row] = []

    def per_approach(label: str, fmt: Callable[[float], str], getter: Callable[[str], float | None], source: str) -> None:
        rows.append(Row(label, {a: getter(a) for a in APPROACHES}, fmt, source))

    heads = run.heads
    for head in heads:
        per_approach(f"{head} accuracy (test)", fmt_percent,
                     lambda a, h=head: train_figure(run, a, "metrics", "test", "heads", h, "accuracy"), layout.TRAIN_RECORD)
        per_approach(f"{head} loss (test)", fmt_loss,
                     lambda a, h=head: train_figure(run, a, "metrics", "test", "heads", h, "loss"), layout.TRAIN_RECORD)
    per_approach("test images", fmt_int, lambda a: train_figure(run, a, "metrics", "test", "n"), layout.TRAIN_RECORD)
    if _partially_labelled(run, heads):
        # Missing labels: each head's accuracy counts its labelled rows only, so show how many.
        for head in heads:
            per_approach(f"{head} labelled images (test)", fmt_int,
                         lambda a, h=head: train_figure(run, a, "metrics", "test", "heads", h, "n"), layout.TRAIN_RECORD)
            per_approach(f"{head} labelled images (train)", fmt_int,
                         # joint: the rows labelled for every head, the only ones it trains on
                         lambda a, h=head: train_figure(run, a, "train_n", h) if not APPROACH_SPECS[a].joint_output
                         else train_figure(run, a, "train_n", JOINT_OUTPUT), layout.TRAIN_RECORD)
        per_approach("test images labelled for every head", fmt_int,
                     lambda a: train_figure(run, a, "metrics", "test", "n_all_labelled"), layout.TRAIN_RECORD)
    rows += _joint_and_unseen_rows(run)
    for precision in PRECISIONS:
        per_approach(f"size {precision}", fmt_mb_bytes, lambda a, p=precision: tflite_bytes(run, a, p), layout.CONVERT_RECORD)
    per_approach("parameters", fmt_int, lambda a: train_figure(run, a, "params", "total"), layout.TRAIN_RECORD)
    per_approach("trained parameters", fmt_int, lambda a: train_figure(run, a, "params", "trainable"), layout.TRAIN_RECORD)
    per_approach("trained-layer MACC", fmt_int, lambda a: train_figure(run, a, "macc", "trained"), layout.TRAIN_RECORD)
    per_approach("total MACC", fmt_int, lambda a: train_figure(run, a, "macc", "total"), layout.TRAIN_RECORD)
    for precision in PRECISIONS:
        per_approach(f"latency p50 {precision}, interpreter", fmt_ms,
                     lambda a, p=precision: latency_ms(run, a, p, "interpreter"), layout.BENCH_RECORD)
        per_approach(f"latency p50 {precision}, file-to-labels", fmt_ms,
                     lambda a, p=precision: latency_ms(run, a, p, "file_to_labels"), layout.BENCH_RECORD)
    for precision in PRECISIONS:
        per_approach(f"peak RSS {precision}", fmt_mb,
                     lambda a, p=precision: _number(_get(bench_record(run, a, p), "peak_rss_mb")), layout.BENCH_RECORD)
    for precision in PRECISIONS:
        for head in heads:
            per_approach(f"{head} accuracy, tflite {precision} (test)", fmt_percent,
                         lambda a, p=precision, h=head: _number(_get(tflite_check(run, a, p), "heads", h, "accuracy")),
                         layout.CONVERT_RECORD)
        per_approach(f"joint accuracy, tflite {precision} (test)", fmt_percent,
                     lambda a, p=precision: _number(_get(tflite_check(run, a, p), "joint_accuracy")), layout.CONVERT_RECORD)
    return Table(f"{run.backbone}", APPROACHES, tuple(rows))


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


LatencyKey = tuple[str, str] | None
"""(precision, latency kind) of a latency row; None for other rows."""


def ratio_quantities(run: RunData) -> list[tuple[str, Callable[[str], float | None], str | None, LatencyKey]]:
    """(label, value per approach, the paper quantity it is comparable to, latency kind) for every
    ratio shown; a row with a latency kind is a paired ratio over bench rounds (``latency_ratio``).

    The paper timed 100 images end to end with float models, so its latency sits beside our float32
    file-to-labels row and its size beside our float32 size; other rows have no paper counterpart.
    """
    out: list[tuple[str, Callable[[str], float | None], str | None, LatencyKey]] = []
    for precision in PRECISIONS:
        out.append((f"latency p50 {precision}, interpreter", lambda a, p=precision: latency_ms(run, a, p), None,
                    (precision, "interpreter")))
        out.append((f"latency p50 {precision}, file-to-labels",
                    lambda a, p=precision: latency_ms(run, a, p, "file_to_labels"),
                    "latency_s" if precision == "float32" else None, (precision, "file_to_labels")))
    for precision in PRECISIONS:
        out.append((f"size {precision}", lambda a, p=precision: tflite_bytes(run, a, p),
                    "size_mb" if precision == "float32" else None, None))
    out.append(("total MACC", lambda a: train_figure(run, a, "macc", "total"), None, None))
    out.append(("trained-layer MACC", lambda a: train_figure(run, a, "macc", "trained"), None, None))
    return out


INTERVAL_NOTE = (
    "Latency ratios: p50 over p50, paired by bench round (the variants run interleaved, A B C A B C, "
    "each round in a fresh process), the geometric mean of the per-round ratios, and in brackets its "
    "95 % bootstrap interval over rounds; an interval that contains 1.0 is marked "
    "\"no measurable difference\". See docs/benchmarks.md."
)


def ratio_table(run: RunData, denominator: str) -> Table:
    """multihead / ``denominator`` for latency, size and MACC, beside the paper's ratios."""
    paper_columns = tuple(f"paper {p.backbone}" for p in PAPER_TABLES)
    columns = ("this run", *paper_columns)
    rows = []
    for label, getter, paper_quantity, latency in ratio_quantities(run):
        if latency is not None:
            precision, kind = latency
            ours: Any = latency_ratio(run, ("multihead", precision), (denominator, precision), kind)
        else:
            ours = _ratio(getter("multihead"), getter(denominator))
        values: dict[str, Any] = {"this run": ours}
        for paper, column in zip(PAPER_TABLES, paper_columns, strict=True):
            values[column] = paper.ratio(paper_quantity, "multihead", denominator) if paper_quantity else None
        rows.append(Row(label, values, fmt_ratio, missing={c: "-" for c in paper_columns}))
    notes = (
        f"Paper columns: {PAPER_CITATION}. Their latency is 100 images end to end with float models, so it "
        "stands beside our float32 file-to-labels ratio, and their float model sizes beside our float32 "
        "sizes; `-` marks a quantity with no published counterpart here (MACC is not transcribed).",
        INTERVAL_NOTE,
    )
    return Table(f"multihead / {denominator}", columns, tuple(rows), notes)


def precision_table(run: RunData) -> Table:
    """int8 / float32 per approach: latency, size, and file-to-labels over interpreter time."""
    rows = [
        Row("latency p50 int8 / float32, interpreter",
            {a: latency_ratio(run, (a, "int8"), (a, "float32")) for a in APPROACHES}, fmt_ratio),
        Row("size int8 / float32",
            {a: _ratio(tflite_bytes(run, a, "int8"), tflite_bytes(run, a, "float32")) for a in APPROACHES}, fmt_ratio),
    ]
    for precision in PRECISIONS:
        rows.append(Row(f"file-to-labels / interpreter p50, {precision}",
                        {a: latency_ratio(run, (a, precision), (a, precision), "file_to_labels", "interpreter")
                         for a in APPROACHES}, fmt_ratio))
    for precision in PRECISIONS:
        rows.append(Row(f"file-to-labels / max(decode, interpreter) p50, {precision}",
                        {a: latency_ratio(run, (a, precision), (a, precision), "file_to_labels",
                                          "max_decode_interpreter") for a in APPROACHES}, fmt_ratio))
    return Table("precision", APPROACHES, tuple(rows), (INTERVAL_NOTE,))


# -- setup and commands -------------------------------------------------------------------------


def _describe(value: Any) -> str:
    if value is None:
        return NOT_MEASURED
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(map(str, value))
    return str(value)


def compose_lines(train: Mapping[str, Any] | None) -> list[str]:
    """What ``--compose auto`` chose and on what (train.json ``compose.auto``), and the catalogue's size."""
    lines = []
    auto = _get(train, "compose", "auto")
    if isinstance(auto, Mapping):
        folds = auto.get("folds") or {}
        lines.append(f"- compose auto chose {auto.get('chosen')} on the pair-held-out folds ({auto.get('decode')} "
                     "decode; joint on held-out / seen pairs: "
                     + ", ".join(f"{m} {100 * v['unseen']:.1f} / {100 * v['seen']:.1f} %" for m, v in folds.items())
                     + ")")
    catalogue = _get(train, "catalogue")
    if isinstance(catalogue, Mapping):
        lines.append(f"- catalogue: {catalogue.get('combinations')} combinations ({catalogue.get('skipped')} rows "
                     "skipped); the joint accuracy is also decoded among them")
    return lines


def setup_lines(run: RunData) -> list[str]:
    """Where the numbers came from: data, model settings, machine, runtime, threads, versions."""
    config = run.config or {}
    lines = [
        f"- run folder: `{run.path}`",
        f"- data: `{_describe(config.get('data') or _get(run.train, 'data'))}`",
        f"- backbone: {run.backbone}; input {_describe(config.get('image_size') or _get(run.train, 'image_size'))}; "
        f"weights: {_describe(config.get('weights') or _get(run.train, 'weights'))}",
    ]
    settings = {k: config[k] for k in ("epochs", "batch_size", "learning_rate", "seed", "freeze_base", "compose")
                if k in config}
    if settings:
        lines.append("- training: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines += compose_lines(run.train)
    folds = _get(run.train, "pair_folds")
    if isinstance(folds, Mapping) and folds.get("held_out"):
        lines.append(f"- fold validation: {folds.get('folds')} folds, each retraining the heads without whole pairs "
                     "(held out: " + "; ".join(", ".join(f) for f in folds["held_out"]) + ")")
    bench = run.bench
    if bench:
        lines.append(f"- machine: {_describe(bench.get('board'))}; CPU: {_describe(bench.get('cpu'))}; "
                     f"governor: {_describe(bench.get('governor'))}")
        lines.append(f"- runtime: {_describe(bench.get('runtime'))} {_describe(bench.get('runtime_version'))}; "
                     f"threads: {_describe(bench.get('threads'))}")
        for key in ("runs", "warmup", "rounds", "min_time_s", "images", "machine"):
            if key in bench:
                lines.append(f"- bench {key}: {_describe(bench[key])}")
        if bench.get("load_average_start") is not None:
            lines.append(f"- bench load average: {_describe(bench.get('load_average_start'))} at the start, "
                         f"at most {_describe(bench.get('load1_max'))} over {_describe(bench.get('cpu_count'))} "
                         f"cores; busy: {'YES' if bench.get('busy') else 'no'}")
        for warning in bench.get("warnings") or []:
            lines.append(f"- bench warning: {warning}")
    else:
        lines.append(f"- machine, runtime, threads: {NOT_MEASURED} (no bench.json)")
    for stage, data in (("train", run.train), ("convert", run.convert)):
        versions = _get(data, "versions")
        if isinstance(versions, Mapping) and versions:
            lines.append(f"- {stage} versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    for problem in run.problems:
        lines.append(f"- problem: {problem}")
    return lines


def command_lines(run: RunData) -> list[str]:
    """The commands that produced the run, as the pipeline recorded them."""
    steps = _get(run.pipeline, "steps")
    if not isinstance(steps, Sequence) or not steps:
        return ["Commands: not recorded (no pipeline.json; run `make all` or `python -m report.pipeline`)."]
    lines = ["| step | command | wall time | status |", "|---|---|---|---|"]
    for step in steps:
        if not isinstance(step, Mapping):
            continue
        command = step.get("command")
        command = " ".join(map(str, command)) if isinstance(command, (list, tuple)) else str(command or "")
        wall = _number(step.get("wall_s"))
        wall_text = "" if wall is None else f"{wall:.1f} s"
        lines.append(f"| {step.get('name', '')} | `{command}` | {wall_text} | {step.get('status', '')} |")
    total = _number(_get(run.pipeline, "total_wall_s"))
    if total is not None:
        lines.append("")
        lines.append(f"Total wall time of the pipeline invocation that last wrote this run: {total:.1f} s "
                     f"({total / 60:.1f} min).")
    invocations = _get(run.pipeline, "invocations")
    if isinstance(invocations, Sequence) and len(invocations) > 1:
        lines.append("")
        lines.append("Invocations (most recent last): " + "; ".join(
            f"{h.get('started', '?')}: {_number(h.get('total_wall_s')) or 0:.1f} s, ran "
            f"{', '.join(h.get('ran') or []) or 'nothing'}" for h in invocations if isinstance(h, Mapping)) + ".")
    return lines


# -- the whole document -------------------------------------------------------------------------


def render_markdown(runs: Sequence[RunData], plots: Mapping[str, Sequence[Path]], out_dir: Path) -> str:
    """The report for one or more runs (one per backbone); ``plots`` maps run path -> PNG files."""
    if not runs:
        raise ReportError("no runs to report on")
    title = runs[0].path.name if len(runs) == 1 else out_dir.name
    parts = [f"# polyhead report: {title}", ""]
    parts.append(
        "Built only from the JSON the stages wrote (config.json, train.json, convert.json, bench.json, "
        "predictions.json, pipeline.json). Accuracy and loss are the Keras models' on the test split "
        "(train.json; the joint approach decoded into heads); sizes are the .tflite files (convert.json, "
        "MB = 10^6 bytes, the separate approach summed over its files) and their accuracy is the convert "
        "stage's check of each deployed variant on the test split with the edge runtime; latency and peak RSS are "
        "polyhead-edge bench (bench.json; the separate approach runs all its files per image). "
        f"`{NOT_MEASURED}` marks a figure no stage has recorded."
    )
    parts.append("")
    for run in runs:
        parts.append(f"## {run.backbone}")
        parts.append("")
        parts.append(approach_table(run).to_markdown("metric"))
        parts.append("")
        parts.append(
            "Unseen combinations: test images whose label combination never occurs in train; the joint "
            "approach cannot output such a combination, so its joint accuracy there is 0 by construction."
        )
        parts.append("")
        for denominator in ("separate", "joint"):
            table = ratio_table(run, denominator)
            parts.append(f"### Ratios multihead / {denominator} ({run.backbone})")
            parts.append("")
            parts.append(table.to_markdown("quantity"))
            parts.append("")
            parts.extend(table.notes)
            parts.append("")
        parts.append(f"### int8 against float32 ({run.backbone})")
        parts.append("")
        table = precision_table(run)
        parts.append(table.to_markdown("ratio"))
        parts.append("")
        parts.extend(table.notes)
        parts.append("")
        run_plots = plots.get(str(run.path), ())
        if run_plots:
            parts.append(f"### Plots ({run.backbone})")
            parts.append("")
            for png in run_plots:
                rel = png.relative_to(out_dir) if png.is_relative_to(out_dir) else png
                parts.append(f"![{png.stem}]({rel.as_posix()})")
                parts.append("")
        parts.append(f"### Setup ({run.backbone})")
        parts.append("")
        parts.extend(setup_lines(run))
        parts.append("")
        parts.append(f"### Commands ({run.backbone})")
        parts.append("")
        parts.extend(command_lines(run))
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"
