"""``python -m convert runs/NAME``: parse the flags and call ``convert.run.convert_run``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from artifacts.layout import RunLayout
from edge.contract.card import PRECISIONS
from edge.errors import PolyheadError
from edge.log import configure_logging


def _precisions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from convert.errors import ConvertError
    from convert.specs import resolve_precision

    items = tuple(p.strip() for p in value.split(",") if p.strip())
    try:
        for p in items:
            resolve_precision(p)
    except ConvertError:
        items = ()
    if not items:
        raise click.BadParameter(f"known precisions: {','.join(PRECISIONS)}. Received: {value!r}")
    return items


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--precision", "precisions", default=",".join(PRECISIONS), show_default=True, callback=_precisions,
              help="comma-separated precisions to write")
@click.option("--calibration", default=256, show_default=True, type=click.IntRange(min=1),
              help="train images (drawn across label combinations) that calibrate int8")
@click.option("--force", is_flag=True, help="convert again even if the source and settings are unchanged")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="interpreter threads for the check")
@click.option("--check-images", default=None, type=click.IntRange(min=0),
              help="check on at most this many test images (default: all)")
@click.option("--seed", default=0, show_default=True, help="calibration sampling seed")
@click.option("--data", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="dataset folder (default: config.json's data)")
@click.option("--allow-outside-paths/--no-allow-outside-paths", "allow_outside_paths", default=None,
              help="accept labels.csv image paths that are absolute or leave the dataset folder "
                   "(default: as the run was trained, config.json's allow_outside_paths)")
@click.option("--no-legacy", is_flag=True, help="skip the tflite-runtime 2.14 check (recorded as unchecked)")
def main(run_dir: Path, precisions: tuple[str, ...], calibration: int, force: bool, threads: int,
         check_images: int | None, seed: int, data: Path | None, no_legacy: bool,
         allow_outside_paths: bool | None) -> None:
    """Convert every model of RUN_DIR to .tflite files in RUN_DIR/edge, check each, write convert.json."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from convert.run import convert_run

    configure_logging()
    try:
        doc = convert_run(run_dir, precisions, calibration, force, threads, check_images, seed,
                          legacy=not no_legacy, log=click.echo, data=data,
                          allow_outside_paths=allow_outside_paths)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    for w in doc["warnings"]:
        click.secho(f"WARNING: {w}", fg="yellow", bold=True, err=True)
    for e in doc["errors"]:
        click.secho(f"CHECK FAILED: {e}", fg="red", bold=True, err=True)
    click.echo(f"wrote {RunLayout(run_dir).convert_record} ({len(doc['files'])} files, {len(doc['errors'])} failed checks)")
    if doc["errors"]:
        sys.exit(1)
