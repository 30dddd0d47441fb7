"""The first step of a conversion: read the run folder, decide which files to (re)convert.

``plan`` returns the ``RunState`` every later step shares (``convert.run``). Everything it reads
from the previous convert.json is read here, once, before anything is rewritten: the file is saved
again after every converted file, so a later step reading it back would see this run's partial
state instead of the previous one.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.layout import KERAS_SUFFIX, RunLayout, model_name, tflite_name
from convert.data import CheckImages
from convert.errors import ConvertError
from convert.records import ConvertRecord, ConvertSettings
from convert.specs import resolve_approach, resolve_precision
from convert.tflite import ConversionSettings, settings_for
from edge.contract.approaches import split_model_stem
from edge.contract.card import ModelCard
from edge.contract.schema import LabelSchema, SchemaError
from edge.io import JsonFileError, atomic_write_json, file_sha256, read_json_object
from edge.runtime.interpreter import dist_version

CONVERT_FORMAT_VERSION = 1
DEFAULT_CALIBRATION = 256
CHECK_SPLIT = "test"

Log = Callable[[str], None]


@dataclass(frozen=True)
class SourceModel:
    """One .keras file of a run and what it is."""

    path: Path
    stem: str
    """``multihead``, ``joint`` or ``separate.<head>`` (``edge.contract.card.model_stem``)."""
    approach: str
    heads: tuple[str, ...]

    def output_name(self, precision: str) -> str:
        return tflite_name(self.stem, precision)

    @property
    def output_keys(self) -> tuple[str, ...]:
        return resolve_approach(self.approach).output_keys(self.heads)


def find_models(run_dir: Path, schema: LabelSchema) -> list[SourceModel]:
    """The run's models/*.keras, each with its approach; anything unrecognised is an error."""
    files = RunLayout(run_dir).keras_files()
    if not files:
        raise ConvertError(
            f"{run_dir}: no models (expected models/multihead.keras, models/joint.keras or models/separate.<head>.keras)"
        )
    found = []
    for f in files:
        stem = f.name[: -len(KERAS_SUFFIX)]
        try:
            approach, head = split_model_stem(stem)
        except ValueError:
            raise ConvertError(
                f"{f}: unknown approach '{stem}'. Known: multihead.keras, joint.keras, separate.<head>.keras"
            ) from None
        unit = next((u for u in resolve_approach(approach).units(schema) if u.stem == stem), None)
        if unit is None:
            raise ConvertError(f"{f}: head '{head}' is not in schema.json. Heads: {list(schema.head_names)}")
        found.append(SourceModel(f, stem, approach, unit.heads))
    return found



def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; missing, unreadable or not an object is a one-line ConvertError."""
    try:
        return read_json_object(path, what)
    except JsonFileError as e:
        raise ConvertError(str(e)) from None


@dataclass(frozen=True)
class Previous:
    """convert.json as the previous conversion left it (empty when there is none)."""

    files: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)


def read_previous(json_path: Path, log: Log) -> Previous:
    """The previous convert.json; an unreadable one is logged and everything is converted again."""
    if not json_path.exists():
        return Previous()
    try:
        d = read_json(json_path, "the previous conversion")
    except ConvertError:
        log(f"{json_path}: unreadable, converting everything again")
        return Previous()

    def obj(key: str) -> dict[str, Any]:
        value = d.get(key)
        return value if isinstance(value, dict) else {}

    return Previous(obj("files"), obj("versions"), obj("variants"))


@dataclass(frozen=True)
class ConvertOptions:
    """The caller's settings of one conversion (``convert_run``'s keywords)."""

    precisions: tuple[str, ...]
    calibration: int
    force: bool
    threads: int
    check_images: int | None
    seed: int
    legacy: bool
    data: str | Path | None
    allow_outside_paths: bool | None


@dataclass(frozen=True)
class Job:
    """One file to convert: a source model at one precision."""

    source: SourceModel
    settings: ConversionSettings
    name: str


@dataclass(frozen=True)
class CheckedFile:
    """A file converted and checked in this run: what the runtime-compatibility step compares to."""

    outputs: dict[str, np.ndarray]
    """Its ai-edge-litert outputs on the check images."""
    size: tuple[int, int]
    card: ModelCard
    keras_probs: dict[str, np.ndarray]


@dataclass
class RunState:
    """What the steps of one conversion share: the run, the plan, and convert.json as it grows."""

    run_dir: Path
    options: ConvertOptions
    schema: LabelSchema
    config: dict[str, Any]
    sources: list[SourceModel]
    source_sha: dict[str, str]
    previous: Previous
    log: Log
    tf_version: str | None
    doc: ConvertRecord = field(init=False)
    """convert.json as this conversion builds it (``plan`` sets it once the plan is known)."""
    todo: list[Job] = field(default_factory=list)
    checked: dict[Path, CheckedFile] = field(default_factory=dict)
    keras_probs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    images: CheckImages | None = None
    """Set once data is needed (only when there is something to convert)."""

    @property
    def json_path(self) -> Path:
        return RunLayout(self.run_dir).convert_record

    def save(self) -> None:
        """Write convert.json (atomic): after every file, so it always describes what is on disk."""
        self.doc["files"] = dict(sorted(self.doc["files"].items()))
        atomic_write_json(self.json_path, self.doc)


def plan(run_dir: Path, options: ConvertOptions, log: Log) -> RunState:
    """Read the run, then decide which files to convert (``todo``) and which to keep as they are."""
    if not run_dir.is_dir():
        raise ConvertError(f"{run_dir}: run folder not found")
    calibrated = [p for p in options.precisions if resolve_precision(p).calibrated]
    if options.calibration < 1 and calibrated:
        raise ConvertError(
            f"--calibration must be at least 1 for {','.join(calibrated)}. Received: calibration={options.calibration}"
        )
    files = RunLayout(run_dir)
    schema = _load_schema(files.schema)
    sources = find_models(run_dir, schema)
    config = read_json(files.config, "the run's resolved settings")
    for name in _clean_stale_temps(files.edge_dir, run_dir):
        log(f"removed a temporary file left by an interrupted write: {name}")
    previous = read_previous(files.convert_record, log)
    state = RunState(run_dir, options, schema, config, sources, {s.stem: file_sha256(s.path) for s in sources},
                     previous, log, dist_version("tensorflow"))
    kept = _split_todo(state)
    state.doc = _new_doc(state, kept)
    for name in sorted(kept):
        log(f"unchanged  {name}")
    return state


def _load_schema(path: Path) -> LabelSchema:
    try:
        return LabelSchema.load(path)
    except FileNotFoundError:
        raise ConvertError(f"{path}: missing (the label schema of the run)") from None
    except (SchemaError, OSError, ValueError) as e:
        msg = str(e)
        raise ConvertError(msg if str(path) in msg else f"{path}: {msg}") from None


def _is_fresh(state: RunState, old: Any, source: SourceModel, settings: ConversionSettings, path: Path) -> bool:
    """The file on disk is what this conversion would write, and it was checked."""
    return not state.options.force and _entry_is_fresh(old, state.source_sha[source.stem], settings,
                                                       state.tf_version, path)


def _entry_is_fresh(old: Any, source_sha: str, settings: ConversionSettings, tf_version: str | None,
                    path: Path) -> bool:
    """convert.json's entry ``old`` is of this source, settings and converter, and the file it describes
    is on disk unchanged and was checked: converting again would write the same file."""
    return (
        isinstance(old, dict)
        and old.get("source", {}).get("sha256") == source_sha
        and old.get("settings") == settings.to_dict()
        and old.get("tensorflow") == tf_version  # a new converter makes new files
        and path.is_file()
        and old.get("sha256") == file_sha256(path)
        and old.get("check") is not None
    )


def conversion_done(run_dir: Path, precisions: Sequence[str], calibration: int = DEFAULT_CALIBRATION,
                    seed: int = 0) -> tuple[bool, str]:
    """Whether ``convert RUN --precision ...`` would keep every file as it is, and why (no TensorFlow).

    The same test the conversion makes before converting (hashes of each .keras and .tflite, the
    settings and the installed converter's version against convert.json), without writing anything.
    """
    files = RunLayout(run_dir)
    try:
        sources = find_models(run_dir, _load_schema(files.schema))
    except ConvertError as e:
        return False, str(e)
    if not files.convert_record.is_file():
        return False, f"no {files.convert_record.name}"
    previous = read_previous(files.convert_record, lambda s: None)
    tf_version = dist_version("tensorflow")
    for s in sources:
        sha = file_sha256(s.path)
        for p in precisions:
            name = s.output_name(p)
            if not _entry_is_fresh(previous.files.get(name), sha, settings_for(p, calibration, seed), tf_version,
                                   run_dir / name):
                return False, f"{name} is not the conversion of {model_name(s.stem)} with these settings"
    return True, "every model converted at every precision"


def _split_todo(state: RunState) -> dict[str, Any]:
    """Fill ``state.todo``; returns the previous entries of the files kept as they are."""
    opts, kept = state.options, {}
    for s in state.sources:
        for p in opts.precisions:
            settings = settings_for(p, opts.calibration, opts.seed)
            name = s.output_name(p)
            old = state.previous.files.get(name)
            if _is_fresh(state, old, s, settings, state.run_dir / name):
                kept[name] = old
            else:
                state.todo.append(Job(s, settings, name))
    # Files from other precisions/models of earlier runs stay listed only if still on disk.
    todo_names = {job.name for job in state.todo}
    for name, old in state.previous.files.items():
        if name not in kept and name not in todo_names and (state.run_dir / name).is_file():
            if isinstance(old, dict) and old.get("source", {}).get("sha256") in state.source_sha.values():
                kept[name] = old
    return kept


def _new_doc(state: RunState, kept: dict[str, Any]) -> ConvertRecord:
    opts = state.options
    # Nothing to convert: no need to import TensorFlow just to restate its version.
    versions = _versions() if state.todo or not state.previous.versions else state.previous.versions
    return ConvertRecord(
        format_version=CONVERT_FORMAT_VERSION,
        run=state.run_dir.name,
        versions=versions,
        settings=ConvertSettings(precisions=list(opts.precisions), calibration=opts.calibration, threads=opts.threads,
                                 check_split=CHECK_SPLIT, check_images=opts.check_images, seed=opts.seed),
        files=dict(kept),
        variants={},
        warnings=[],
        errors=[],
    )


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from edge.runtime.interpreter import load_interpreter_class

    _, rt, rt_version = load_interpreter_class("ai-edge-litert")
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "converter": f"tf.lite.TFLiteConverter.from_keras_model (tensorflow {tf.__version__})",
        rt: rt_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _clean_stale_temps(edge_dir: Path, run_dir: Path) -> list[str]:
    """Remove temporary files a killed atomic write left (``.<name>.<random>.tmp``)."""
    removed = []
    for folder in (edge_dir, run_dir):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.tmp"):
            if p.name.startswith((".convert.json.",)) or p.parent == edge_dir:
                p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed
