"""Errors of the conversion stage: one line, naming the file or value at fault."""

from __future__ import annotations

from edge.errors import PolyheadError


class ConvertError(PolyheadError):
    """A run cannot be converted (no models, unknown approach, no calibration images, ...)."""


class UnsupportedOpError(ConvertError):
    """The model needs TensorFlow ops outside the TFLite built-ins (Flex / SELECT_TF_OPS)."""
