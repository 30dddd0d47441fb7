"""``make all``: data -> train -> convert -> bench -> predictions -> report, reusing finished work.

Each stage runs as its own CLI in a subprocess, exactly as a user would type it, so TensorFlow's
memory never sits in the process that benchmarks, and a stage that crashes cannot take the
orchestration down with it. Every stage is skipped when its output is already up to date:

- data: ``DATA/labels.csv`` exists;
- train: ``train.json`` holds every approach and ``config.json`` matches the requested settings
  (``train.done``);
- convert: convert.json records every model at every precision from these very files (hashes) with
  these settings and this converter: the conversion would keep every file (``convert.plan``);
- bench: ``bench.json`` is newer than every .tflite and was measured with the same threads
  (``edge.bench.records``);
- predictions: ``predictions.json`` is newer than the multihead .tflite (``report.predictions``).

Each stage answers for itself; this module only asks. Every path is ``artifacts.layout``'s.

The commands, their wall times and whether they ran are saved in ``RUN/pipeline.json`` for the
report. The last line printed is the report's path.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from artifacts.layout import RunLayout
from convert.plan import conversion_done
from datasets.folder import LABELS_FILE, META_FILE
from edge.bench.records import bench_is_current
from edge.contract.card import APPROACHES
from edge.errors import PolyheadError
from edge.io import JsonFileError, atomic_write_bytes, atomic_write_json, read_json_object
from edge.log import configure_logging
from train.defaults import COMPOSE_MODES, DEFAULTS, PROTOCOLS, as_text
from train.done import config_conflict
from train.done import training_done as train_done


class PipelineError(PolyheadError):
    """A stage failed; the message names the stage, its exit status and its command."""


@dataclass(frozen=True)
class PipelineSettings:
    """What ``make all`` asks for (the Makefile's variables)."""

    data: Path
    run: Path
    backbone: str = DEFAULTS.backbone
    image_size: int = DEFAULTS.image_size
    epochs: int = DEFAULTS.epochs
    num_images: int = DEFAULTS.num_images
    synth_size: int = DEFAULTS.synth_size
    holdout_combos: int = DEFAULTS.holdout_combos
    precisions: tuple[str, ...] = DEFAULTS.precisions
    threads: int = DEFAULTS.threads
    seed: int = DEFAULTS.seed
    weights: str = DEFAULTS.weights
    batch_size: int | None = None
    bench_runs: int = DEFAULTS.bench_runs
    bench_images: int = DEFAULTS.bench_images
    protocol: str = DEFAULTS.protocol
    """A name in train.defaults.PROTOCOLS: frozen, fine-tune or scratch (forces weights none)."""
    compose: str = DEFAULTS.compose
    """Heads on a frozen base: none, additive (train/compose.py), projected, projected-residual
    (train/subspace.py) or auto (train/autocompose.py)."""
    extra_train_args: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise PipelineError(f"unknown protocol. Known: {list(PROTOCOLS)}. Received: protocol={self.protocol!r}")

    @property
    def train_weights(self) -> str:
        """The weights training gets: the protocol's when it forces them (scratch: none)."""
        return PROTOCOLS[self.protocol].weights or self.weights

    @property
    def freeze_base(self) -> bool:
        return PROTOCOLS[self.protocol].freeze_base or "--freeze-base" in self.extra_train_args


def display(command: Sequence[str]) -> list[str]:
    """A command as recorded for the report: programs inside the working folder shown relative to it."""
    cwd = Path.cwd()
    out = []
    for i, part in enumerate(command):
        path = Path(part)
        if i == 0 and path.is_absolute() and path.is_relative_to(cwd):
            part = str(path.relative_to(cwd))
        out.append(part)
    return out


@dataclass
class Step:
    name: str
    command: list[str]
    status: str
    wall_s: float | None = None


def _python() -> str:
    return sys.executable


def edge_cli() -> list[str]:
    """The ``polyhead-edge`` console script of this environment (as a user runs it)."""
    script = Path(sys.executable).with_name("polyhead-edge")
    return [str(script)] if script.exists() else [_python(), "-m", "edge.cli"]


def run_command(name: str, command: Sequence[str], cwd: Path | None = None) -> float:
    """Run one stage, its output streaming to the terminal; returns its wall time."""
    click.echo(f"[{name}] $ {shlex.join(command)}", err=True)
    start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = subprocess.run(list(command), cwd=cwd, env=env, stdout=sys.stderr)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise PipelineError(f"stage '{name}' failed (exit {result.returncode}): {shlex.join(command)}")
    click.echo(f"[{name}] done in {wall:.1f} s", err=True)
    return wall


def _read_json(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, or None when it is absent or unreadable (the stage is then not done)."""
    try:
        return read_json_object(path)
    except JsonFileError:
        return None


# -- up-to-date checks (pure functions of the files on disk, tested directly) --------------------


def data_ready(data: Path) -> bool:
    """A finished dataset folder (the datasets stage's answer): the synthetic generator writes labels.csv last."""
    return (data / LABELS_FILE).is_file()


def data_differences(s: PipelineSettings) -> list[str]:
    """Settings in which an existing synthetic set (its dataset.json) differs from the ones asked for."""
    meta = _read_json(s.data / META_FILE)
    if not meta or meta.get("source") != "synthetic":
        return []
    wanted = {"num_images": s.num_images, "image_size": s.synth_size, "seed": s.seed}
    diffs = [f"{k}={meta[k]} (asked {v})" for k, v in wanted.items() if k in meta and meta[k] != v]
    held = meta.get("holdout_combinations")
    if isinstance(held, list) and len(held) != s.holdout_combos:
        diffs.append(f"holdout_combos={len(held)} (asked {s.holdout_combos})")
    return diffs


def wanted_config(settings: PipelineSettings) -> dict[str, Any]:
    """The config.json values ``settings`` ask training for (the keys a finished run is judged by)."""
    wanted: dict[str, Any] = {
        "backbone": settings.backbone,
        "image_size": [settings.image_size, settings.image_size],
        "epochs": settings.epochs,
        "seed": settings.seed,
        "weights": settings.train_weights,
        "freeze_base": settings.freeze_base,
        "compose": settings.compose,
    }
    if settings.batch_size:
        wanted["batch_size"] = settings.batch_size
    return wanted


def settings_conflict(settings: PipelineSettings) -> str | None:
    """Why the run folder's config.json was made with other settings (None when it matches or is absent).

    The training stage reuses a finished model whatever the epochs asked, and refuses another
    backbone in the same folder, so a changed setting is reported here rather than silently reused.
    """
    return config_conflict(RunLayout(settings.run), wanted_config(settings), settings.data)


def training_done(settings: PipelineSettings) -> tuple[bool, str]:
    """Whether ``train.json`` already holds every approach trained with the requested settings (train's answer)."""
    return train_done(RunLayout(settings.run), APPROACHES, wanted_config(settings), settings.data)


# -- the steps ----------------------------------------------------------------------------------


def synth_command(s: PipelineSettings) -> list[str]:
    return [_python(), "-m", "datasets", "synth", "--out", str(s.data), "--num-images", str(s.num_images),
            "--image-size", str(s.synth_size), "--holdout-combos", str(s.holdout_combos), "--seed", str(s.seed)]


def train_command(s: PipelineSettings) -> list[str]:
    command = [_python(), "-m", "train", "--data", str(s.data), "--backbone", s.backbone,
               "--approach", ",".join(APPROACHES), "--out", str(s.run), "--image-size", str(s.image_size),
               "--epochs", str(s.epochs), "--seed", str(s.seed), "--weights", s.train_weights, "--protocol", s.protocol,
               "--compose", s.compose, "--resume"]
    if s.batch_size:
        command += ["--batch-size", str(s.batch_size)]
    return command + list(s.extra_train_args)


def convert_command(s: PipelineSettings) -> list[str]:
    return [_python(), "-m", "convert", str(s.run), "--precision", ",".join(s.precisions)]


def bench_command(s: PipelineSettings, images: Path) -> list[str]:
    run = RunLayout(s.run)
    return [*edge_cli(), "bench", str(run.edge_dir), "--images", str(images), "--runs", str(s.bench_runs),
            "--threads", str(s.threads), "--out", str(run.bench_record)]


def prepare_bench_images(data: Path, out: Path, count: int, allow_outside_paths: bool = False) -> Path:
    """A folder of ``count`` test images (copies) with their own labels.csv, for a labelled bench.

    The edge bench reports accuracy when a labels.csv sits beside the images; the test split is
    taken in labels.csv order so the same images are used on every run. The dataset is read by
    ``datasets.folder.load_dataset``: image paths that are absolute or leave the dataset are
    refused unless ``allow_outside_paths`` (the run's config.json).
    """
    import csv
    import io

    from edge.io import atomic_write_text
    from report.predictions import PredictionsError, split_records

    try:
        heads, records = split_records(data, allow_outside_paths, limit=count)
    except PredictionsError as e:
        raise PipelineError(str(e)) from None
    names = [f"{i:04d}{r.path.suffix.lower()}" for i, r in enumerate(records)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "split", *heads])
    writer.writerows([name, r.split, *r.labels] for r, name in zip(records, names, strict=True))
    labels = out / LABELS_FILE
    if labels.is_file() and labels.read_text(encoding="utf-8") == buf.getvalue() and all(
        (out / name).is_file() for name in names
    ):
        return out  # same images as last time: keep them (and their timestamps)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file() or old.is_symlink():
            old.unlink()
    for record, name in zip(records, names, strict=True):
        # Copies, not links: the bench folder stays valid if the dataset moves, and is small.
        atomic_write_bytes(out / name, record.path.read_bytes())
    atomic_write_text(labels, buf.getvalue())
    return out


@dataclass(frozen=True)
class Stage:
    """One step of ``make all``: its command, and whether its output is already up to date.

    ``measurement``: a failure is recorded and the report still renders (bench, predictions).
    """

    name: str
    command: Callable[[PipelineSettings], list[str]]
    is_done: Callable[[PipelineSettings], tuple[bool, str]]
    measurement: bool = False


def _data_done(s: PipelineSettings) -> tuple[bool, str]:
    if not data_ready(s.data):
        return False, f"no {s.data / LABELS_FILE}"
    diffs = data_differences(s)
    if diffs:
        # Rebuilding would silently invalidate every run trained on it: reuse, and say so.
        click.echo(f"[data] note: {s.data} was made with {', '.join(diffs)}; reusing it "
                   f"(delete the folder to rebuild)", err=True)
    return True, f"{s.data / LABELS_FILE} exists"


def _train_done(s: PipelineSettings) -> tuple[bool, str]:
    conflict = settings_conflict(s)
    if conflict:
        raise PipelineError(f"{conflict}: use another run folder (--run / RUN=) or delete this one")
    return training_done(s)


def _bench_images(s: PipelineSettings) -> Path:
    from report.predictions import run_allows_outside_paths

    return prepare_bench_images(s.data, RunLayout(s.run).bench_images, s.bench_images,
                                run_allows_outside_paths(s.run, s.data))


def predictions_command(s: PipelineSettings) -> list[str]:
    return [_python(), "-m", "report.predictions", str(s.run), "--data", str(s.data), "--threads", str(s.threads)]


def _predictions_done(s: PipelineSettings) -> tuple[bool, str]:
    from report.predictions import predictions_done

    return predictions_done(s.run)


def bench_done(run: Path, threads: int) -> tuple[bool, str]:
    """The bench stage's answer: bench.json measured every .tflite as it is now, with ``threads``."""
    files = RunLayout(run)
    return bench_is_current(files.bench_record, files.tflite_files(), threads)


STAGES: tuple[Stage, ...] = (
    Stage("data", synth_command, _data_done),
    Stage("train", train_command, _train_done),
    Stage("convert", convert_command, lambda s: conversion_done(s.run, s.precisions)),
    Stage("bench", lambda s: bench_command(s, _bench_images(s)), lambda s: bench_done(s.run, s.threads),
          measurement=True),
    Stage("predictions", predictions_command, _predictions_done, measurement=True),
)
"""``make all`` in order; the report is rendered after them in this process."""


class _Record:
    """pipeline.json: the steps of this invocation, and every invocation's total."""

    def __init__(self, s: PipelineSettings) -> None:
        self.s = s
        self.start = time.perf_counter()
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.steps: list[Step] = []
        old = _read_json(RunLayout(s.run).pipeline_record) or {}
        self.previous = {st.get("name"): st for st in old.get("steps", []) if isinstance(st, Mapping)}
        # Every invocation's total, so a 2-second re-run does not hide what the first run cost.
        self.history = [h for h in old.get("invocations", []) if isinstance(h, Mapping)][-9:]

    def reused(self, name: str, command: list[str], why: str) -> None:
        click.echo(f"[{name}] up to date ({why}); skipped", err=True)
        old = self.previous.get(name) or {}
        wall = old.get("wall_s") if old.get("command") == display(command) else None
        self.steps.append(Step(name, display(command), f"reused ({why})", wall))

    def save(self) -> None:
        total = round(time.perf_counter() - self.start, 2)
        now = {"started": self.started_at, "total_wall_s": total,
               "ran": [st.name for st in self.steps if st.status == "ran"]}
        atomic_write_json(RunLayout(self.s.run).pipeline_record, {
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.s).items()},
            "steps": [asdict(st) for st in self.steps],
            "total_wall_s": total,
            "invocations": [*self.history, now],
        })


def _run_stage(stage: Stage, s: PipelineSettings, record: _Record) -> str | None:
    """Run or reuse one stage; returns a measurement stage's failure (other failures raise)."""
    done, why = stage.is_done(s)
    command = stage.command(s)
    if done:
        record.reused(stage.name, command, why)
        return None
    if stage.name == "train":
        click.echo(f"[train] needed: {why}", err=True)
    try:
        wall = run_command(stage.name, command)
    except PipelineError as e:
        record.steps.append(Step(stage.name, display(command), f"failed: {e}"))
        record.save()
        if not stage.measurement:
            raise
        click.echo(f"[{stage.name}] {e}; the report shows its figures as not measured", err=True)
        return str(e)
    record.steps.append(Step(stage.name, display(command), "ran", round(wall, 2)))
    record.save()
    return None


def run_pipeline(s: PipelineSettings, stages: Sequence[Stage] = STAGES) -> Path:
    """Run (or reuse) every stage for ``s`` and write the report; returns the report's path."""
    s.run.mkdir(parents=True, exist_ok=True)
    record = _Record(s)
    failures = [f for f in (_run_stage(stage, s, record) for stage in stages) if f]
    record.steps.append(Step("report", display([_python(), "-m", "report", str(s.run)]), "ran"))
    record.save()
    from report.render.build import write_report

    t = time.perf_counter()
    path = write_report([s.run])
    record.steps[-1].wall_s = round(time.perf_counter() - t, 2)
    record.save()
    if failures:
        raise PipelineError(f"report written to {path}, but {'; '.join(failures)}")
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULTS.data),
              show_default=True, help="Dataset folder; the synthetic set is built here if absent.")
@click.option("--run", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULTS.run),
              show_default=True, help="Run folder.")
@click.option("--backbone", default=DEFAULTS.backbone, show_default=True)
@click.option("--image-size", type=int, default=DEFAULTS.image_size, show_default=True, help="Model input size (px).")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=int, default=DEFAULTS.batch_size, show_default=True)
@click.option("--num-images", type=int, default=DEFAULTS.num_images, show_default=True,
              help="Synthetic images to draw.")
@click.option("--synth-size", type=int, default=DEFAULTS.synth_size, show_default=True,
              help="Synthetic image size (px).")
@click.option("--holdout-combos", type=int, default=DEFAULTS.holdout_combos, show_default=True)
@click.option("--precision", default=as_text(DEFAULTS.precisions), show_default=True)
@click.option("--threads", type=int, default=DEFAULTS.threads, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--weights", default=DEFAULTS.weights, show_default=True)
@click.option("--protocol", type=click.Choice(list(PROTOCOLS)), default=DEFAULTS.protocol, show_default=True,
              help="frozen: pretrained base frozen, heads on cached features (the paper); fine-tune: head "
                   "warm-up then every layer, BatchNorm frozen; scratch: weights none, every layer.")
@click.option("--bench-runs", type=int, default=DEFAULTS.bench_runs, show_default=True, help="Timed runs per variant.")
@click.option("--bench-images", type=int, default=DEFAULTS.bench_images, show_default=True,
              help="Test images to benchmark on.")
@click.option("--compose", type=click.Choice(COMPOSE_MODES),
              default=DEFAULTS.compose, show_default=True,
              help="Heads on a frozen base: additive feature augmentation names pairs never seen together; "
                   "projected also keeps each head off the other heads' components, projected-residual off the "
                   "pair-specific directions too; auto: the one the run's pair-held-out folds prefer.")
def main(data: Path, run: Path, backbone: str, image_size: int, epochs: int, batch_size: int | None,
         num_images: int, synth_size: int, holdout_combos: int, precision: str, threads: int, seed: int,
         weights: str, protocol: str, bench_runs: int, bench_images: int, compose: str) -> None:
    """Build the synthetic set if absent, train, convert, benchmark, and write the report."""
    configure_logging()
    try:
        settings = PipelineSettings(
            data=data, run=run, backbone=backbone, image_size=image_size, epochs=epochs, num_images=num_images,
            synth_size=synth_size, holdout_combos=holdout_combos,
            precisions=tuple(p.strip() for p in precision.split(",") if p.strip()), threads=threads, seed=seed,
            weights=weights, batch_size=batch_size, bench_runs=bench_runs, bench_images=bench_images,
            protocol=protocol, compose=compose,
        )
        path = run_pipeline(settings)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
