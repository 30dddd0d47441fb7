"""What a precision and an approach mean to the converter: one table each, resolved once.

The precision names live in ``edge.contract.card`` (``PRECISIONS``: the card validates them on the
device) and the approach table in ``edge.contract.approaches`` (train, convert and the card read
it); the precision table here adds what only the converter needs. ``resolve_precision("int8")``
turns a name into everything it implies, as timm's ``resolve_precision`` does; code downstream
reads the spec's fields and never compares precision or approach strings. Adding a precision means
adding one row here (and its name in ``edge.contract.card``); ``tests/test_convert_specs.py`` fails
until both agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from convert.errors import ConvertError
from edge.contract.approaches import APPROACH_SPECS, APPROACHES, ApproachSpec
from edge.contract.card import PRECISIONS

INT8_MAX_DROP = 0.02
"""An accuracy drop above this (2 points) on any head of a quantised file is a loud warning."""


@dataclass(frozen=True)
class PrecisionSpec:
    """How one precision is converted and how closely its file must follow Keras."""

    name: str
    optimise: bool
    """``tf.lite.Optimize.DEFAULT`` (quantise weights); False for float32 only."""
    weight_dtype: str | None
    """``target_spec.supported_types`` (float16 weights), None to leave the converter's choice."""
    calibrated: bool
    """Full-integer: representative (calibration) images, int8 built-ins only, integer input."""
    input_dtype: str
    """dtype of the converted file's input tensor (uint8 takes raw pixels)."""
    output_dtype: str
    """dtype of each output tensor (uint8 softmax, scale 1/256, for full-integer)."""
    min_agreement: float | None
    """Lowest top-1 agreement with Keras per head; below it the file fails its check (None: no bound)."""
    warn_on_drop: bool
    """An accuracy drop above ``INT8_MAX_DROP`` on a head is a warning."""


# dynamic is 98 %, not 99: it quantizes activations on the fly, so images near a decision
# boundary flip like int8's do. Measured on a trained MobileNetV2 multihead (synthetic data, 437
# test images): 98.86 % on ``make`` with a 0.46-point accuracy drop; per-channel Dense weights
# change nothing. int8 has no agreement bound: its accuracy drop is what is watched.
_PRECISION_SPECS = (
    #             name       optimise weight_dtype calibrated input_dtype output_dtype min_agreement warn_on_drop
    PrecisionSpec("float32", False,   None,        False,     "float32",  "float32",   0.995,        False),
    PrecisionSpec("float16", True,    "float16",   False,     "float32",  "float32",   0.99,         False),
    PrecisionSpec("dynamic", True,    None,        False,     "float32",  "float32",   0.98,         True),
    PrecisionSpec("int8",    True,    None,        True,      "uint8",    "uint8",     None,         True),
)
PRECISION_SPECS: dict[str, PrecisionSpec] = {s.name: s for s in _PRECISION_SPECS}


def resolve_precision(name: str) -> PrecisionSpec:
    """The spec of a precision name; an unknown name is a one-line ConvertError listing the known ones."""
    try:
        return PRECISION_SPECS[name]
    except (KeyError, TypeError):
        raise ConvertError(f"unknown precision. Known: {list(PRECISIONS)}. Received: precision={name!r}") from None


def resolve_approach(name: str) -> ApproachSpec:
    """The spec of an approach name; an unknown name is a one-line ConvertError listing the known ones."""
    try:
        return APPROACH_SPECS[name]
    except (KeyError, TypeError):
        raise ConvertError(f"unknown approach. Known: {list(APPROACHES)}. Received: approach={name!r}") from None
