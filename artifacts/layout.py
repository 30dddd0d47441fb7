"""The run folder's layout: every path in ``runs/<name>/``, named here and nowhere else.

```
runs/<name>/
  config.json, schema.json                  train: the resolved settings and the label schema
  models/<model>.keras                      train (``multihead``, ``joint``, ``separate.<head>``)
  logs/<model>.csv, checkpoints/<model>/    train: per-epoch log, resumable checkpoints (inside,
                                            train.fit's own resume files: epoch-NNNN.keras, done.json)
  features/                                 train: the frozen base's cached features (add-head)
  train.json                                train: the record of every approach
  edge/<model>.<precision>.tflite           convert: the deployment (copy this folder to a Pi)
  convert.json                              convert: the record of every file
  bench.json, bench_images/                 the edge bench and the images ``make all`` gives it
  predictions.json                          report.predictions
  pipeline.json                             ``make all``: its steps and their wall times
  report.md, plots/                         report
```

Host-only (the device sees one ``edge/`` folder and writes one bench.json where it is told), so it
lives beside the host stages, not in ``edge/``: train, convert and report import it, and none of
them needs another stage's package to find a file. A name in a record (train.json's ``files``,
convert.json's keys) is the path relative to the run folder, as ``RunLayout.name`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
SCHEMA = "schema.json"
TRAIN_RECORD = "train.json"
CONVERT_RECORD = "convert.json"
BENCH_RECORD = "bench.json"
PREDICTIONS = "predictions.json"
PIPELINE_RECORD = "pipeline.json"
REPORT = "report.md"
MODELS = "models"
EDGE = "edge"
LOGS = "logs"
CHECKPOINTS = "checkpoints"
FEATURES = "features"
PLOTS = "plots"
BENCH_IMAGES = "bench_images"
KERAS_SUFFIX = ".keras"
TFLITE_SUFFIX = ".tflite"

RECORDS = (CONFIG, TRAIN_RECORD, CONVERT_RECORD, BENCH_RECORD, PREDICTIONS, PIPELINE_RECORD)
"""The JSON files the stages write, in stage order (what the report reads)."""


def model_name(model: str) -> str:
    """A Keras model's name relative to the run folder: ``models/<model>.keras`` (train.json's ``files``)."""
    return f"{MODELS}/{model}{KERAS_SUFFIX}"


def tflite_name(model: str, precision: str) -> str:
    """A converted file's name relative to the run folder: ``edge/<model>.<precision>.tflite`` (convert.json's keys)."""
    return f"{EDGE}/{model}.{precision}{TFLITE_SUFFIX}"


def tflite_stem(name: str) -> str:
    """The model of a name ``tflite_name`` made (a head name may hold dots)."""
    return Path(name).name.rsplit(".", 2)[0]


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (``RunLayout(Path("runs/default")).train_record``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def path(self, name: str) -> Path:
        """A path from its name relative to the run folder (a record's ``files`` entry)."""
        return self.root / name

    def name(self, path: Path) -> str:
        """The name relative to the run folder of a path inside it (posix separators)."""
        return Path(path).relative_to(self.root).as_posix()

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def schema(self) -> Path:
        return self.root / SCHEMA

    @property
    def train_record(self) -> Path:
        return self.root / TRAIN_RECORD

    @property
    def convert_record(self) -> Path:
        return self.root / CONVERT_RECORD

    @property
    def bench_record(self) -> Path:
        return self.root / BENCH_RECORD

    @property
    def predictions(self) -> Path:
        return self.root / PREDICTIONS

    @property
    def pipeline_record(self) -> Path:
        return self.root / PIPELINE_RECORD

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS

    @property
    def edge_dir(self) -> Path:
        """The deployment: every .tflite, each carrying its model card."""
        return self.root / EDGE

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def features_dir(self) -> Path:
        return self.root / FEATURES

    @property
    def plots_dir(self) -> Path:
        return self.root / PLOTS

    @property
    def bench_images(self) -> Path:
        return self.root / BENCH_IMAGES

    def model(self, model: str) -> Path:
        """``models/<model>.keras``."""
        return self.root / model_name(model)

    def log(self, model: str) -> Path:
        """``logs/<model>.csv``: one row per epoch."""
        return self.logs_dir / f"{model}.csv"

    def checkpoints(self, model: str) -> Path:
        """``checkpoints/<model>/``: epoch checkpoints and done.json."""
        return self.checkpoints_dir / model

    def tflite(self, model: str, precision: str) -> Path:
        """``edge/<model>.<precision>.tflite``."""
        return self.root / tflite_name(model, precision)

    def keras_files(self) -> list[Path]:
        """Every ``models/*.keras``, sorted."""
        return sorted(self.models_dir.glob(f"*{KERAS_SUFFIX}"))

    def tflite_files(self) -> list[Path]:
        """Every ``edge/*.tflite``, sorted."""
        return sorted(self.edge_dir.glob(f"*{TFLITE_SUFFIX}"))

    def is_run(self) -> bool:
        """The folder holds a run's record (a stage has written into it)."""
        return any((self.root / n).exists() for n in (CONFIG, TRAIN_RECORD, CONVERT_RECORD, BENCH_RECORD))
