"""Is training done? The training stage's own answer, from the run folder (no TensorFlow).

A run is trained for some settings when its config.json was written with them and its train.json
records every approach asked for, with each model file it lists on disk. ``make all``
(report.pipeline) asks this instead of judging train's files itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from artifacts.layout import RunLayout
from edge.io import JsonFileError, read_json_object


def _read(path: Path) -> dict[str, Any] | None:
    """The file's JSON object, or None when it is absent or unreadable (not done)."""
    try:
        return read_json_object(path)
    except JsonFileError:
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [str(x) for x in a] == [str(x) for x in b]
    return str(a) == str(b)


def config_conflict(run: RunLayout, wanted: Mapping[str, Any], data: Path | None = None) -> str | None:
    """Why the run's config.json was made with other settings than ``wanted`` (config.json keys),
    or with another dataset folder than ``data``; None when it matches or is absent.

    A key config.json lacks is not a conflict (an older run).
    """
    config = _read(run.config)
    if config is None:
        return None
    for key, value in wanted.items():
        if key in config and not _same(config[key], value):
            return f"{run.config} has {key}={config[key]!r}, asked for {value!r}"
    if data is not None and "data" in config and Path(str(config["data"])).resolve() != data.resolve():
        return f"{run.config} has data={config['data']!r}, asked for {str(data)!r}"
    return None


def training_done(run: RunLayout, approaches: Sequence[str], wanted: Mapping[str, Any],
                  data: Path | None = None) -> tuple[bool, str]:
    """Whether train.json already holds every approach, trained with the ``wanted`` settings; and why."""
    conflict = config_conflict(run, wanted, data)
    if conflict:
        return False, conflict
    record = _read(run.train_record)
    if record is None:
        return False, f"no {run.train_record.name}"
    variants = record.get("variants") or {}
    missing = [a for a in approaches if a not in variants]
    if missing:
        return False, f"{run.train_record.name} lacks {missing}"
    for approach in approaches:
        for name in variants[approach].get("files") or []:
            if not run.path(name).exists():
                return False, f"{name} is missing"
    return True, f"{run.train_record.name} has every approach with these settings"
