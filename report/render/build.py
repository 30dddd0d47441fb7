"""Write a report: tables and plots for one run, or for a folder of runs (one per backbone)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from artifacts.layout import RunLayout
from edge.io import atomic_write_text
from report.render.markdown import ReportError, find_runs, load_run, render_markdown


def write_report(paths: Sequence[str | Path], out_dir: str | Path | None = None, plots: bool = True) -> Path:
    """Render ``report.md`` (and ``plots/*.png``) into ``out_dir`` (default: the first path).

    Each path is a run folder, or a folder whose sub-folders are runs (e.g. the paper's three
    backbones in ``runs/paper``). Returns the report's path.
    """
    if not paths:
        raise ReportError("give at least one run folder")
    run_paths: list[Path] = []
    for path in paths:
        run_paths.extend(find_runs(path))
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    runs = [load_run(p) for p in run_paths]
    made: dict[str, list[Path]] = {}
    if plots:
        from report.render.plots import make_plots

        names = [r.backbone for r in runs]
        for run in runs:
            # Distinct prefixes when one report covers several runs (two runs may share a backbone).
            prefix = ""
            if len(runs) > 1:
                prefix = (run.backbone if names.count(run.backbone) == 1 else run.path.name) + "_"
            made[str(run.path)] = make_plots(run, RunLayout(out).plots_dir, prefix)
    text = render_markdown(runs, made, out)
    return atomic_write_text(RunLayout(out).report, text)
