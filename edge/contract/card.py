"""The model card: every .tflite file carries its own description.

It says which variant and approach the file belongs to, the label schema, which heads this file
serves and under which signature output names, the input tensor (size, dtype, quantisation, value
range), how the file was made, and the SHA-256 of the model it describes. This module is the card
as data: its fields, their validation (an unknown format version or a malformed field is a
one-line ``CardError``) and its JSON form, at most ``MAX_CARD_BYTES``. How it travels inside a
.tflite file, and how reading binds it to that model, is ``edge.contract.card_archive``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from edge.contract.approaches import APPROACH_SPECS, APPROACHES
from edge.contract.cardcheck import card_field_problem
from edge.contract.schema import JOINT_OUTPUT, LabelSchema, SchemaError
from edge.errors import PolyheadError, first_line

CARD_FORMAT_VERSION = 1
MAX_CARD_BYTES = 1 << 20
PRECISIONS = ("float32", "float16", "dynamic", "int8")
INPUT_DTYPES = ("float32", "uint8", "int8")


class CardError(PolyheadError):
    """A model card is missing, malformed, or does not match its model."""


@dataclass(frozen=True)
class InputSpec:
    """The model's image input: raw RGB pixels of this size, in ``value_range``, as ``dtype``.

    For an integer input, pixel value v enters as round(v / scale + zero_point).
    """

    name: str
    height: int
    width: int
    channels: int = 3
    dtype: str = "float32"
    scale: float | None = None
    zero_point: int | None = None
    value_range: tuple[float, float] = (0.0, 255.0)

    def __post_init__(self) -> None:
        if self.dtype not in INPUT_DTYPES:
            raise CardError(f"input dtype must be one of {INPUT_DTYPES}. Received: dtype={self.dtype!r}")
        for key in ("height", "width", "channels"):
            v = getattr(self, key)
            if not isinstance(v, int) or not 0 < v <= 8192:
                raise CardError(f"input {key} must be a positive integer. Received: {key}={v!r}")
        if self.dtype != "float32" and (self.scale is None or self.zero_point is None):
            raise CardError(f"an {self.dtype} input needs scale and zero_point")
        if self.scale is not None and not (isinstance(self.scale, (int, float)) and 0 < self.scale < float("inf")):
            raise CardError(f"input scale must be a positive number. Received: scale={self.scale!r}")
        if self.zero_point is not None and not isinstance(self.zero_point, int):
            raise CardError(f"input zero_point must be an integer. Received: zero_point={self.zero_point!r}")
        lo_hi = tuple(self.value_range)
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi) or not lo_hi[0] < lo_hi[1]:
            raise CardError(f"input value_range must be (low, high) with low < high. Received: {self.value_range!r}")


@dataclass(frozen=True)
class ModelCard:
    """Everything the edge needs to run one .tflite file and name what it outputs."""

    variant: str
    approach: str
    schema: LabelSchema
    heads: tuple[str, ...]
    """Heads this file answers: every schema head, or one for a ``separate`` file."""
    outputs: dict[str, str]
    """Head name (or ``joint``) -> signature output name."""
    input: InputSpec
    backbone: str
    precision: str
    signature: str = "serving_default"
    converter_version: str = ""
    tensorflow_version: str = ""
    runtime_compat: dict[str, Any] = field(default_factory=dict)
    """What each runtime can load, e.g. {"tflite-runtime 2.14.0": {"loads": false, "missing_ops": [...]}}."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (training metrics, weights used, created_at)."""
    format_version: int = CARD_FORMAT_VERSION
    model_sha256: str = ""
    """SHA-256 of the flatbuffer the card was embedded in (set by ``edge.contract.card_archive.embed_card``);
    reading checks it, so a card moved onto another model or a tampered model is refused."""

    def __post_init__(self) -> None:
        if self.approach not in APPROACHES:
            raise CardError(f"approach must be one of {APPROACHES}. Received: approach={self.approach!r}")
        if self.precision not in PRECISIONS:
            raise CardError(f"precision must be one of {PRECISIONS}. Received: precision={self.precision!r}")
        if not self.variant:
            raise CardError("a card needs a variant name")
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise CardError(f"a card needs distinct heads. Received: heads={list(self.heads)}")
        for h in self.heads:
            self.schema.head(h)  # raises for an unknown head
        spec = APPROACH_SPECS[self.approach]
        if not spec.one_model_per_head and set(self.heads) != set(self.schema.head_names):
            raise CardError(
                f"a {self.approach} file serves every head {list(self.schema.head_names)}. Received: heads={list(self.heads)}"
            )
        expected = set(spec.output_keys(self.heads))
        if set(self.outputs) != expected:
            raise CardError(
                f"a {self.approach} card needs outputs for {sorted(expected)}. Received: outputs={sorted(self.outputs)}"
            )

    def output_classes(self, key: str) -> tuple[str, ...]:
        """Class names of output ``key`` (a head name, or ``joint``: combination display names)."""
        if key == JOINT_OUTPUT:
            return tuple(self.schema.combination_name(c) for c in self.schema.combinations)
        return self.schema.head(key).classes

    def with_updates(self, **changes: Any) -> ModelCard:
        return replace(self, **changes)

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "variant": self.variant,
            "approach": self.approach,
            "heads": list(self.heads),
            "outputs": dict(self.outputs),
            "signature": self.signature,
            "input": {**asdict(self.input), "value_range": list(self.input.value_range)},
            "schema": self.schema.to_dict(),
            "backbone": self.backbone,
            "precision": self.precision,
            "converter_version": self.converter_version,
            "tensorflow_version": self.tensorflow_version,
            "runtime_compat": self.runtime_compat,
            "extra": self.extra,
            **({"model_sha256": self.model_sha256} if self.model_sha256 else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        if not isinstance(d, Mapping):
            raise CardError(f"card must be a JSON object. Received: {type(d).__name__}")
        version = d.get("format_version")
        if version != CARD_FORMAT_VERSION:
            raise CardError(f"unknown card format_version {version!r} (this polyhead reads {CARD_FORMAT_VERSION})")
        problem = card_field_problem(d)
        if problem:
            raise CardError(f"malformed card: {problem}")
        try:
            inp = dict(d["input"])
            inp["value_range"] = tuple(float(x) for x in inp.get("value_range", (0.0, 255.0)))
            outputs = d["outputs"]
            if not isinstance(outputs, Mapping):
                raise CardError("'outputs' must be an object")
            return cls(
                variant=str(d["variant"]),
                approach=str(d["approach"]),
                schema=LabelSchema.from_dict(d["schema"]),
                heads=tuple(str(h) for h in d["heads"]),
                outputs={str(k): str(v) for k, v in outputs.items()},
                input=InputSpec(**inp),
                backbone=str(d.get("backbone", "")),
                precision=str(d["precision"]),
                signature=str(d.get("signature", "serving_default")),
                converter_version=str(d.get("converter_version", "")),
                tensorflow_version=str(d.get("tensorflow_version", "")),
                runtime_compat=dict(d.get("runtime_compat") or {}),
                extra=dict(d.get("extra") or {}),
                model_sha256=str(d.get("model_sha256") or ""),
            )
        except CardError:
            raise
        except SchemaError as e:
            raise CardError(f"card schema: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
            msg = first_line(e, 200)
            raise CardError(f"malformed card: {type(e).__name__}: {msg}") from None

    def to_json_bytes(self) -> bytes:
        data = json.dumps(self.to_dict(), indent=1).encode("utf-8")
        if len(data) > MAX_CARD_BYTES:
            raise CardError(f"card is {len(data)} bytes, over the {MAX_CARD_BYTES}-byte limit")
        return data

