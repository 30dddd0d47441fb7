"""``polyhead-edge``: inspect, run and benchmark polyhead .tflite deployments on the device.

The commands parse their options and call the edge library; known errors become one-line
messages, never tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge.errors import PolyheadError
from edge.log import configure_logging
from edge.text import encodable, printable


def _fail(e: PolyheadError) -> click.ClickException:
    return click.ClickException(printable(str(e)))


def _echo(text: str, err: bool = False) -> None:
    """Print a line made safe: escaped (edge.text.printable) and encodable in the stream's encoding."""
    stream = sys.stderr if err else sys.stdout
    click.echo(encodable(printable(text), getattr(stream, "encoding", None)), err=err)


def _model_options(f):
    """--max-input-pixels, --max-arena-mb (the model check's caps) and --trusted-key."""
    from edge.safety.modelcheck import DEFAULT_LIMITS

    f = click.option("--trusted-key", default=None, type=click.Path(dir_okay=False),
                     help="Refuse any .tflite not signed by this Ed25519 public key PEM (default: $POLYHEAD_TRUSTED_KEY).")(f)
    f = click.option("--max-arena-mb", default=DEFAULT_LIMITS.max_arena_mb, show_default=True,
                     type=click.FloatRange(0, min_open=True), help="Refuse a model whose tensors need more memory.")(f)
    return click.option("--max-input-pixels", default=DEFAULT_LIMITS.max_input_pixels, show_default=True,
                        type=click.IntRange(1), help="Refuse a model whose input has more pixels.")(f)


def _limits(max_input_pixels: int, max_arena_mb: float):
    from edge.safety.modelcheck import ModelLimits

    return ModelLimits(max_input_pixels, max_arena_mb)


def _trusted(given: str | None):
    """The loaded trusted public key (--trusted-key or $POLYHEAD_TRUSTED_KEY), or None."""
    from edge.safety.signing import load_public_key, trusted_key

    path = trusted_key(given)
    return load_public_key(path) if path else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="polyhead", prog_name="polyhead-edge")
def main() -> None:
    """Run polyhead multi-head image classifiers (.tflite with an embedded model card)."""
    configure_logging()


# -- info -----------------------------------------------------------------------------------------


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.option("--probe-timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds the child that loads and runs each file may take.")
@click.option("--probe-memory-mb", default=2048, show_default=True, type=click.IntRange(64),
              help="Address space the child that loads and runs each file may use.")
@_model_options
def info(path: str, as_json: bool, probe_timeout: float, probe_memory_mb: int, max_input_pixels: int,
         max_arena_mb: float, trusted_key: str | None) -> None:
    """The card, input and outputs, size and loadability of each .tflite at PATH, and the variants found.

    Whether a file loads is asked of a child process with a time and memory limit, after the model check.
    """
    from edge.runtime.describe import describe, format_info
    from edge.safety.probe import ProbeLimits

    try:
        d = describe(path, _limits(max_input_pixels, max_arena_mb), ProbeLimits(probe_timeout, probe_memory_mb),
                     _trusted(trusted_key))
    except PolyheadError as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(d, indent=1))
    else:
        for line in format_info(d).splitlines():
            _echo(line)


# -- predict --------------------------------------------------------------------------------------


def _expand(sources: tuple[str, ...]) -> list[Path]:
    """The image paths the arguments name: a folder's image files, or the argument itself (checked
    when it is loaded: a FIFO or a symlink loop is then that image's error)."""
    from edge.runtime.labels import list_images

    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        paths += list_images(p) if p.is_dir() else [p]
    return paths


def _labels_for(sources: tuple[str, ...], paths: list[Path]) -> tuple[tuple[str, ...], list]:
    """The labels.csv tables at the root of each folder given and beside each image (all with the
    first one's heads). One that is not a regular file inside its folder is skipped with a warning."""
    import os

    from edge.runtime.labels import read_labels_csv
    from edge.safety.paths import PathError

    candidates = [Path(s) / "labels.csv" for s in sources if Path(s).is_dir()]
    candidates += [folder / "labels.csv" for folder in dict.fromkeys(p.parent for p in paths)]  # per folder, not per image
    heads: tuple[str, ...] = ()
    tables = []
    seen = set()
    for csv_path in candidates:
        real = os.path.realpath(csv_path)
        if real in seen or not os.path.lexists(csv_path):
            continue
        seen.add(real)
        try:
            h, table = read_labels_csv(csv_path)
        except PathError as e:
            click.echo(f"warning: labels not used: {e}", err=True)
            continue
        if heads and h != heads:
            continue  # a second labels.csv with other heads: keep the first one's
        heads = h
        tables.append(table)
    return heads, tables


def _row_labels(tables: list, path: str) -> tuple[str, ...] | None:
    for table in tables:
        row = table.get(path)
        if row is not None:
            return row
    return None


def _emitter(fmt: str, variant_id: str, heads: tuple[str, ...], top_k: int, catalogue: bool = False):
    """A function that prints one Prediction in ``fmt`` (the csv header is printed now). Paths and
    errors are escaped: a file name that is not UTF-8 or holds a newline cannot break the output.
    ``catalogue``: the predictions carry the catalogue's combination (a ``catalogue`` column/cell)."""
    import csv

    if fmt == "jsonl":
        def jsonl_row(pred) -> None:
            d = pred.to_dict()
            d["image"] = printable(d["image"])
            if "error" in d:
                d["error"] = printable(d["error"])
            click.echo(json.dumps({"variant": variant_id, **d}))
        return jsonl_row
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        encoding = getattr(sys.stdout, "encoding", None)
        writer.writerow(["image"] + [c for h in heads for c in (h, f"{h}_score", f"{h}_top_k")]
                        + (["catalogue"] if catalogue else []) + ["error"])

        def csv_row(pred) -> None:
            row = [pred.path]
            for h in heads:
                r = pred.heads.get(h)
                row += ([r.label, f"{r.score:.6f}", ";".join(f"{lab}:{s:.6f}" for lab, s in r.top_k)]
                        if r else ["", "", ""])
            if catalogue:
                row.append(_combination(pred))
            writer.writerow([encodable(printable(cell), encoding) for cell in row + [pred.error or ""]])
        return csv_row

    def table_row(pred) -> None:
        if not pred.ok:
            _echo(f"{printable(pred.path)}  ERROR {pred.error}")
            return
        cells = []
        for h, r in pred.heads.items():
            shown = r.top_k if top_k > 1 else r.top_k[:1]
            cells.append(f"{h}: " + ", ".join(f"{lab} {s:.3f}" for lab, s in shown))
        if pred.catalogue is not None:
            cells.append(f"catalogue: {_combination(pred)}")
        _echo(f"{printable(pred.path)}  " + "  |  ".join(cells))
    return table_row


def _combination(pred) -> str:
    """The catalogue's combination of a prediction as ``label/label`` (empty without one)."""
    from edge.contract.schema import JOINT_SEPARATOR

    return JOINT_SEPARATOR.join(pred.catalogue.values()) if pred.catalogue else ""


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--variant", "variant_name", default=None, help="Variant id (e.g. multihead.int8) when PATH holds several.")
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(1, 1000), help="Labels per head to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table", show_default=True)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Interpreter threads.")
@click.option("--catalogue", "catalogue_path", type=click.Path(dir_okay=False), default=None,
              help="catalogue.csv of the combinations that exist: also give the listed one the heads rate highest.")
@_model_options
def predict(path: str, images: tuple[str, ...], variant_name: str | None, top_k: int, fmt: str, threads: int,
            catalogue_path: str | None, max_input_pixels: int, max_arena_mb: float, trusted_key: str | None) -> None:
    """Label each image (files or folders) with the model at PATH: one record per image.

    A bad image gives an error record and the rest go on; the exit status is 1 if any failed.
    With a labels.csv beside the images, per-head and joint accuracy follow. With --catalogue, each
    record also names the listed combination with the highest summed log-probability of the heads.
    """
    from edge.runtime.interpreter import limit_malloc_arenas
    from edge.runtime.labels import Accuracy
    from edge.runtime.predict import Predictor, iter_predictions
    from edge.runtime.variants import discover, select_variant

    limit_malloc_arenas()
    try:
        variant = select_variant(discover(path, trusted_key=_trusted(trusted_key)), variant_name)
        predictor = Predictor(variant, num_threads=threads, limits=_limits(max_input_pixels, max_arena_mb))
        if catalogue_path is not None:
            predictor.use_catalogue(catalogue_path)
        paths = _expand(images)
        csv_heads, labels = _labels_for(images, paths)
    except PolyheadError as e:
        raise _fail(e) from None
    if not paths:
        raise click.ClickException(printable(f"no images in {', '.join(images)}"))
    _echo(f"{variant.id}: {len(paths)} image(s), {predictor.runtime} {predictor.runtime_version}, "
          f"{threads} thread(s)", err=True)
    acc = Accuracy.for_labels(csv_heads, predictor.heads)
    emit = _emitter(fmt, variant.id, predictor.heads, top_k, catalogue=catalogue_path is not None)
    failed = 0
    for pred in iter_predictions(predictor, paths, top_k):
        failed += not pred.ok
        row_labels = _row_labels(labels, pred.path) if labels else None
        if row_labels is not None and acc.heads:
            acc.add(pred, row_labels)
        emit(pred)
    summary = acc.to_dict()
    if summary is not None:
        text = (f"accuracy over {summary['n']} labelled images ({variant.id}): "
                + ", ".join(f"{h} {a:.4f} (n={summary['heads_n'][h]})" for h, a in summary["heads"].items())
                + ("" if summary["joint"] is None else f", joint {summary['joint']:.4f} (n={summary['joint_n']})")
                + ("" if summary.get("joint_catalogue") is None else
                   f", joint decoded among the catalogue {summary['joint_catalogue']:.4f}"))
        _echo(text, err=fmt != "table")
    if failed:
        click.echo(f"{failed} of {len(paths)} images failed", err=True)
        sys.exit(1)


# -- bench ----------------------------------------------------------------------------------------


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images (labels.csv inside gives accuracy); random pixels if omitted.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1),
              help="Timed runs per variant and round, at least.")
# The two defaults are edge.bench.run.DEFAULT_ROUNDS / DEFAULT_MIN_TIME_S (a test checks), written out here
# so that importing the CLI does not import the bench.
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1),
              help="Rounds per variant, interleaved A B C A B C, each in a fresh process.")
@click.option("--min-time", "min_time_s", default=0.6, show_default=True, type=click.FloatRange(0),
              help="Each round's timed loops run for at least S seconds in all.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Interpreter threads.")
@click.option("--duration", "duration_s", default=None, type=click.FloatRange(0, min_open=True),
              help="Also loop over the images for S seconds: RSS slope and error count.")
@click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Write bench.json here.")
@click.option("--csv", "out_csv", type=click.Path(dir_okay=False), default=None, help="Write a CSV row per variant.")
def bench(path: str, images: str | None, runs: int, rounds: int, min_time_s: float, warmup: int, threads: int,
          duration_s: float | None, out_json: str | None, out_csv: str | None) -> None:
    """Benchmark every variant at PATH in interleaved rounds of fresh processes: latency, throughput,
    memory, accuracy, and every ratio with its 95 % interval over rounds."""
    from edge.bench.format import format_table, to_csv
    from edge.bench.run import run_bench
    from edge.io import atomic_write_json, atomic_write_text

    try:
        result = run_bench(path, images, runs=runs, warmup=warmup, threads=threads, duration_s=duration_s,
                           progress=lambda msg: click.echo(msg, err=True), rounds=rounds, min_time_s=min_time_s)
    except PolyheadError as e:
        raise _fail(e) from None
    try:
        if out_json:
            atomic_write_json(out_json, result)
        if out_csv:
            atomic_write_text(out_csv, to_csv(result))
    except OSError as e:
        raise click.ClickException(f"cannot write {e.filename or out_json or out_csv}: {e.strerror or e}") from None
    click.echo(format_table(result))
    if result["variants"] and all(r.get("error") for r in result["variants"].values()):
        sys.exit(1)


# -- live (edge/live/command.py: the command is built there, with the shared model options) ------

from edge.live.command import live_command  # noqa: E402  (imports click only)

main.add_command(live_command(_model_options))


if __name__ == "__main__":
    main()
