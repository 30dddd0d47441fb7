"""convert.json's shape, as TypedDicts (``key_errors`` itself is edge.io's).

train.json is in train.records, bench.json in edge.bench.records, each with its
``*_key_errors``. The writers build their entries through these types and the tests hold every
record they write to them (``key_errors``), so a renamed or dropped key fails a check instead of a
reader showing "not measured". Standard library only: the edge and the report may read them too.
(Optional keys are split into ``total=False`` bases: ``NotRequired`` needs Python 3.11, polyhead 3.10.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from edge.io import key_errors


class _HeadCheckRequired(TypedDict):
    accuracy: float | None
    keras_accuracy: float | None
    drop: float | None
    agreement: float | None
    max_prob_diff: float | None


class HeadCheck(_HeadCheckRequired, total=False):
    """One head of a check: fractions 0..1 (``drop`` = Keras accuracy - accuracy)."""

    disagreements: int
    """Images whose top-1 differs from Keras's (absent when there were no images)."""


class _CheckRequired(TypedDict):
    n: int
    heads: dict[str, HeadCheck]
    joint_accuracy: float | None
    keras_joint_accuracy: float | None


class CheckRecord(_CheckRequired, total=False):
    """A converted file (or variant) against its Keras original on the check images."""

    runtime: str
    """Set on a variant's check measured through ``edge.runtime.Predictor``."""


class _RuntimeCompatRequired(TypedDict):
    runtime: str
    loads: bool | None


class RuntimeCompat(_RuntimeCompatRequired, total=False):
    """Whether one runtime loads a file, and agrees: ``status`` ok, fails, disagrees or unchecked."""

    status: str
    missing_ops: list[str]
    error: str | None
    vs_ai_edge_litert: dict[str, Any]
    check: CheckRecord


class SourceRecord(TypedDict):
    path: str
    sha256: str
    bytes: int


class InputRecord(TypedDict):
    dtype: str
    scale: float | None
    zero_point: int | None
    height: int
    width: int


class _ConvertFileRequired(TypedDict):
    variant: str
    approach: str
    heads: list[str]
    precision: str
    bytes: int
    sha256: str
    source: SourceRecord
    settings: dict[str, Any]
    tensorflow: str | None
    input: InputRecord
    outputs: dict[str, str]
    output_dtypes: dict[str, str]
    ops: list[str]
    op_versions: dict[str, int]
    convert_s: float
    check: CheckRecord
    passed: bool
    runtime_compat: dict[str, RuntimeCompat]
    warnings: list[str]
    errors: list[str]


class ConvertFile(_ConvertFileRequired, total=False):
    """One converted file, keyed in convert.json by its path in the run (``edge/<stem>.<precision>.tflite``)."""

    calibration_images: int


class _ConvertVariantRequired(TypedDict):
    approach: str
    precision: str
    files: list[str]
    bytes: int
    complete: bool
    warnings: list[str]
    errors: list[str]


class ConvertVariant(_ConvertVariantRequired, total=False):
    """A variant as the device runs it (``separate``: its files together), keyed ``<approach>.<precision>``."""

    check: CheckRecord


class ConvertSettings(TypedDict):
    precisions: list[str]
    calibration: int
    threads: int
    check_split: str
    check_images: int | None
    seed: int


class ConvertRecord(TypedDict):
    """convert.json."""

    format_version: int
    run: str
    versions: dict[str, str]
    settings: ConvertSettings
    files: dict[str, ConvertFile]
    variants: dict[str, ConvertVariant]
    warnings: list[str]
    errors: list[str]


def _check_key_errors(check: Mapping[str, Any], where: str) -> list[str]:
    errors = key_errors(check, CheckRecord, where)
    for head, metrics in check.get("heads", {}).items():
        errors += key_errors(metrics, HeadCheck, f"{where} head '{head}'")
    return errors


def convert_key_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every key of a convert.json document that ``ConvertRecord`` (and the types in it) does not expect, or misses."""
    errors = key_errors(doc, ConvertRecord, "convert.json")
    errors += key_errors(doc.get("settings", {}), ConvertSettings, "convert.json settings")
    for name, f in doc.get("files", {}).items():
        errors += key_errors(f, ConvertFile, name)
        errors += key_errors(f.get("source", {}), SourceRecord, f"{name} source")
        errors += key_errors(f.get("input", {}), InputRecord, f"{name} input")
        errors += _check_key_errors(f.get("check", {}), f"{name} check")
        for runtime, compat in f.get("runtime_compat", {}).items():
            errors += key_errors(compat, RuntimeCompat, f"{name} runtime_compat '{runtime}'")
            if "check" in compat:
                errors += _check_key_errors(compat["check"], f"{name} runtime_compat '{runtime}' check")
    for vid, v in doc.get("variants", {}).items():
        errors += key_errors(v, ConvertVariant, f"variant {vid}")
        if "check" in v:
            errors += _check_key_errors(v["check"], f"variant {vid} check")
    return errors
