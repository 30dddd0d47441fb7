"""``polyhead-edge``: inspect, run and benchmark polyhead .tflite deployments on the device.

The commands parse their options and call the edge library; known errors become one-line
messages, never tracebacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge.card import CardError
from edge.errors import ModelError, PolyheadError


def _fail(e: PolyheadError) -> click.ClickException:
    return click.ClickException(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="polyhead", prog_name="polyhead-edge")
def main() -> None:
    """Run polyhead multi-head image classifiers (.tflite with an embedded model card)."""


# -- info -----------------------------------------------------------------------------------------


def describe(path: str | Path) -> dict:
    """Everything ``info`` shows about a deployment, as a dict (each file, then the variants)."""
    from edge.card import read_card
    from edge.compat import probe
    from edge.model import Model
    from edge.variants import discover, tflite_files

    path = Path(path)
    files = tflite_files(path)
    out: dict = {"path": str(path), "files": {}, "variants": {}, "problems": []}
    for f in files:
        entry: dict = {"bytes": f.stat().st_size}
        try:
            card = read_card(f)
        except CardError as e:
            entry["error"] = str(e)
            out["files"][f.name] = entry
            continue
        entry.update(variant=card.variant, approach=card.approach, precision=card.precision,
                     heads={h: list(card.schema.head(h).classes) for h in card.heads},
                     outputs=card.outputs, input=card.to_dict()["input"], backbone=card.backbone,
                     converter_version=card.converter_version, tensorflow_version=card.tensorflow_version,
                     runtime_compat=card.runtime_compat)
        if card.approach == "joint":
            entry["combinations"] = card.schema.num_combinations
        try:
            model = Model(f, card)
            entry["signature"] = {
                "name": card.signature,
                "inputs": {k: {"shape": [int(x) for x in d["shape"]], "dtype": str(d["dtype"].__name__)}
                           for k, d in model.runner.get_input_details().items()},
                "outputs": {k: {"shape": [int(x) for x in d["shape"]], "dtype": str(d["dtype"].__name__)}
                            for k, d in model.runner.get_output_details().items()},
            }
            entry["loads"] = True
        except (CardError, ModelError) as e:
            entry["loads"] = False
            entry["error"] = str(e)
            try:
                entry["this_runtime"] = probe(f)
            except ModelError:
                pass  # no interpreter here at all: the card is still shown, and the error says why it cannot run
        out["files"][f.name] = entry
    problems: list[tuple[str, str]] = []
    for vid, v in discover(path, problems).items():
        out["variants"][vid] = {"approach": v.approach, "files": [f.name for f in v.files], "bytes": v.bytes,
                                "heads": list(v.heads)}
    out["problems"] = [{"file": f, "error": e} for f, e in problems]
    return out


def _format_info(d: dict) -> str:
    from edge.interpreter import load_interpreter_class

    lines = []
    try:
        _, rt, ver = load_interpreter_class()
        lines.append(f"runtime here: {rt} {ver}")
    except ModelError as e:
        lines.append(f"runtime here: none ({e})")
    for name, e in d["files"].items():
        lines.append(f"{name}  ({e['bytes']} bytes)")
        if "variant" not in e:
            lines.append(f"  error: {e['error']}")
            continue
        lines.append(f"  variant {e['variant']}.{e['precision']}  approach {e['approach']}  backbone {e['backbone']}")
        for h, classes in e["heads"].items():
            shown = ", ".join(classes[:8]) + (f", ... ({len(classes)})" if len(classes) > 8 else "")
            lines.append(f"  head {h}: {len(classes)} classes [{shown}]")
        if "combinations" in e:
            lines.append(f"  joint output: {e['combinations']} combinations seen in training")
        i = e["input"]
        quant = f" scale {i['scale']:.6g} zero_point {i['zero_point']}" if i["dtype"] != "float32" else ""
        lines.append(f"  input '{i['name']}': {i['height']}x{i['width']}x{i['channels']} {i['dtype']}{quant} "
                     f"pixels {i['value_range'][0]:g}..{i['value_range'][1]:g}")
        lines.append("  outputs (card key -> signature output): "
                     + ", ".join(f"{k} -> {v}" for k, v in e["outputs"].items()))
        lines.append(f"  made by: TensorFlow {e['tensorflow_version'] or '?'}, converter {e['converter_version'] or '?'}")
        if e.get("loads"):
            sig = e["signature"]
            lines.append(f"  loads here: yes; signature '{sig['name']}' outputs "
                         + ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in sig["outputs"].items()))
        else:
            lines.append(f"  loads here: NO: {e.get('error')}")
            ops = (e.get("this_runtime") or {}).get("missing_ops")
            if ops:
                lines.append(f"  missing ops here: {', '.join(ops)}")
        for rt_name, r in (e.get("runtime_compat") or {}).items():
            verdict = {True: "loads", False: "does NOT load", None: "not checked"}.get(r.get("loads"), "?")
            extra = f" (missing: {', '.join(r['missing_ops'])})" if r.get("missing_ops") else ""
            lines.append(f"  {rt_name}: {verdict}{extra}")
    lines.append("variants:")
    for vid, v in d["variants"].items():
        lines.append(f"  {vid}: {len(v['files'])} file(s), {v['bytes']} bytes, heads {', '.join(v['heads'])}")
    for p in d["problems"]:
        lines.append(f"  unusable: {p['file']}: {p['error']}")
    return "\n".join(lines)


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info(path: str, as_json: bool) -> None:
    """The card, input and outputs, size and loadability of each .tflite at PATH, and the variants found."""
    try:
        d = describe(path)
    except PolyheadError as e:
        raise _fail(e) from None
    click.echo(json.dumps(d, indent=1) if as_json else _format_info(d))


# -- predict --------------------------------------------------------------------------------------


def _expand(sources: tuple[str, ...]) -> list[Path]:
    from edge.bench import list_images

    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        paths += list_images(p) if p.is_dir() else [p]
    return paths


def _labels_for(sources: tuple[str, ...], paths: list[Path]) -> tuple[tuple[str, ...], dict[Path, tuple[str, ...]]]:
    """Labels from the labels.csv at the root of each folder given and beside each image."""
    from edge.labels import read_labels_csv

    candidates = [Path(s) / "labels.csv" for s in sources if Path(s).is_dir()]
    candidates += [folder / "labels.csv" for folder in dict.fromkeys(p.parent for p in paths)]  # per folder, not per image
    heads: tuple[str, ...] = ()
    labels: dict[Path, tuple[str, ...]] = {}
    for csv_path in dict.fromkeys(c.resolve() for c in candidates):
        if not csv_path.is_file():
            continue
        h, lab = read_labels_csv(csv_path)
        if heads and h != heads:
            continue  # a second labels.csv with other heads: keep the first one's
        heads = h
        labels.update(lab)
    return heads, labels


def _emitter(fmt: str, variant_id: str, heads: tuple[str, ...], top_k: int):
    """A function that prints one Prediction in ``fmt`` (the csv header is printed now)."""
    import csv

    if fmt == "jsonl":
        return lambda pred: click.echo(json.dumps({"variant": variant_id, **pred.to_dict()}))
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image"] + [c for h in heads for c in (h, f"{h}_score", f"{h}_top_k")] + ["error"])

        def csv_row(pred) -> None:
            row = [pred.path]
            for h in heads:
                r = pred.heads.get(h)
                row += ([r.label, f"{r.score:.6f}", ";".join(f"{lab}:{s:.6f}" for lab, s in r.top_k)]
                        if r else ["", "", ""])
            writer.writerow(row + [pred.error or ""])
        return csv_row

    def table_row(pred) -> None:
        if not pred.ok:
            click.echo(f"{pred.path}  ERROR {pred.error}")
            return
        cells = []
        for h, r in pred.heads.items():
            shown = r.top_k if top_k > 1 else r.top_k[:1]
            cells.append(f"{h}: " + ", ".join(f"{lab} {s:.3f}" for lab, s in shown))
        click.echo(f"{pred.path}  " + "  |  ".join(cells))
    return table_row


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--variant", "variant_name", default=None, help="Variant id (e.g. multihead.int8) when PATH holds several.")
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(1, 1000), help="Labels per head to show.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table", show_default=True)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Interpreter threads.")
def predict(path: str, images: tuple[str, ...], variant_name: str | None, top_k: int, fmt: str, threads: int) -> None:
    """Label each image (files or folders) with the model at PATH: one record per image.

    A bad image gives an error record and the rest go on; the exit status is 1 if any failed.
    With a labels.csv beside the images, per-head and joint accuracy follow.
    """
    from edge.interpreter import limit_malloc_arenas
    from edge.labels import Accuracy
    from edge.predict import Predictor, iter_predictions
    from edge.variants import discover, select_variant

    limit_malloc_arenas()
    try:
        variant = select_variant(discover(path), variant_name)
        predictor = Predictor(variant, num_threads=threads)
        paths = _expand(images)
        csv_heads, labels = _labels_for(images, paths)
    except PolyheadError as e:
        raise _fail(e) from None
    if not paths:
        raise click.ClickException(f"no images in {', '.join(images)}")
    click.echo(f"{variant.id}: {len(paths)} image(s), {predictor.runtime} {predictor.runtime_version}, "
               f"{threads} thread(s)", err=True)
    acc = Accuracy.for_labels(csv_heads, predictor.heads)
    emit = _emitter(fmt, variant.id, predictor.heads, top_k)
    failed = 0
    for pred in iter_predictions(predictor, paths, top_k):
        failed += not pred.ok
        row_labels = labels.get(Path(pred.path).resolve())
        if row_labels is not None and acc.heads:
            acc.add(pred, row_labels)
        emit(pred)
    summary = acc.to_dict()
    if summary is not None:
        text = (f"accuracy over {summary['n']} labelled images ({variant.id}): "
                + ", ".join(f"{h} {a:.4f} (n={summary['heads_n'][h]})" for h, a in summary["heads"].items())
                + ("" if summary["joint"] is None else f", joint {summary['joint']:.4f} (n={summary['joint_n']})"))
        click.echo(text, err=fmt != "table")
    if failed:
        click.echo(f"{failed} of {len(paths)} images failed", err=True)
        sys.exit(1)


# -- bench ----------------------------------------------------------------------------------------


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of images (labels.csv inside gives accuracy); random pixels if omitted.")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1), help="Timed runs per variant.")
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(0), help="Untimed runs first.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Interpreter threads.")
@click.option("--duration", "duration_s", default=None, type=click.FloatRange(0, min_open=True),
              help="Also loop over the images for S seconds: RSS slope and error count.")
@click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None, help="Write bench.json here.")
@click.option("--csv", "out_csv", type=click.Path(dir_okay=False), default=None, help="Write a CSV row per variant.")
def bench(path: str, images: str | None, runs: int, warmup: int, threads: int, duration_s: float | None,
          out_json: str | None, out_csv: str | None) -> None:
    """Benchmark every variant at PATH, each in a fresh process: latency, throughput, memory, accuracy."""
    from edge.bench import format_table, run_bench, to_csv
    from edge.io import atomic_write_json, atomic_write_text

    try:
        result = run_bench(path, images, runs=runs, warmup=warmup, threads=threads, duration_s=duration_s,
                           progress=lambda msg: click.echo(msg, err=True))
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


if __name__ == "__main__":
    main()
