"""``python -m report RUN [RUN...]``: render RUN/report.md and RUN/plots/*.png from the stages' JSON."""

from __future__ import annotations

import click

from edge.errors import PolyheadError
from edge.log import configure_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for report.md and plots/ (default: the first RUN).")
@click.option("--no-plots", is_flag=True, help="Tables only.")
def main(runs: tuple[str, ...], out_dir: str | None, no_plots: bool) -> None:
    """Render the paper-style report of RUN (a run folder, or a folder of runs, one per backbone)."""
    from report.render.build import write_report

    configure_logging()
    try:
        path = write_report(runs, out_dir, plots=not no_plots)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
