"""One .tflite file: its card checked against the signature it actually has, and a ready runner.

Outputs are always read by *signature name* through ``get_signature_runner``: TFLite's tensor order
and tensor names (``StatefulPartitionedCall:0``) are not the model's. A card that does not describe
its model is a one-line ``CardError`` before anything runs.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract.card import CardError, ModelCard
from edge.contract.card_archive import read_card
from edge.errors import ModelError, first_line
from edge.runtime.interpreter import load_interpreter_class, runtime_of
from edge.safety.modelcheck import DEFAULT_LIMITS, ModelLimits, check_model_file
from edge.safety.runtime_faults import known_crash


def _input_lut(card: ModelCard, dtype: np.dtype) -> np.ndarray | None:
    """Map a uint8 pixel to the model's input value, as a 256-entry table (None: pixels go in as is)."""
    lo, hi = card.input.value_range
    values = lo + np.arange(256, dtype=np.float64) * ((hi - lo) / 255.0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.round(values / card.input.scale + card.input.zero_point), info.min, info.max)
    lut = values.astype(dtype)
    if dtype == np.uint8 and np.array_equal(lut, np.arange(256)):
        return None  # uint8 input with scale ~1, zero 0 over 0..255: raw pixels are the input
    return lut


class Model:
    """One .tflite file: its card, checked against its signature, and a ready signature runner."""

    def __init__(self, path: str | os.PathLike, card: ModelCard | None = None, num_threads: int = 1,
                 interpreter_class: type | None = None, limits: ModelLimits = DEFAULT_LIMITS):
        self.path = Path(path)
        self.card = card if card is not None else read_card(self.path)
        name = str(self.path)
        # Before any interpreter sees the file: it would crash, hang or exhaust memory on files its
        # structural verifier accepts (edge/safety/modelcheck.py). Every signature is checked; the card's is
        # looked up below, so a card naming another signature stays a CardError.
        self.summary = check_model_file(self.path, None, limits)
        cls = interpreter_class or load_interpreter_class()[0]
        # ...and before a runtime known to crash on what the file holds (edge/safety/runtime_faults.py).
        crash = known_crash(self.summary.dense, *runtime_of(cls), platform.machine())
        if crash:
            raise ModelError(f"{name}: {crash}")
        try:
            # model_path lets the interpreter mmap the file (the card at its end is ignored).
            self.interpreter = cls(model_path=name, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            signatures = self.interpreter.get_signature_list()
        except Exception as e:  # the interpreter's own message, e.g. "not a valid Flatbuffer buffer"
            raise ModelError(f"{name}: cannot load model ({first_line(e)})") from None
        sig = self.card.signature
        if sig not in signatures:
            raise CardError(f"{name}: card signature '{sig}' not in the model. Signatures: {sorted(signatures)}")
        try:
            self.runner = self.interpreter.get_signature_runner(sig)
            inputs = self.runner.get_input_details()
            outputs = self.runner.get_output_details()
        except Exception as e:
            raise ModelError(f"{name}: cannot read signature '{sig}' ({first_line(e)})") from None
        self._check_input(inputs)
        self._check_outputs(outputs)

    def _check_input(self, inputs: dict[str, dict[str, Any]]) -> None:
        spec, name = self.card.input, str(self.path)
        if list(inputs) != [spec.name]:
            raise CardError(f"{name}: card input '{spec.name}' but the signature's inputs are {sorted(inputs)}")
        d = inputs[spec.name]
        want = (spec.height, spec.width, spec.channels)
        got = tuple(int(x) for x in d["shape"][1:])
        if len(d["shape"]) != 4 or got != want:
            raise CardError(f"{name}: card input shape {want} but the model takes {tuple(int(x) for x in d['shape'])}")
        dtype = np.dtype(d["dtype"])
        if dtype.name != spec.dtype:
            raise CardError(f"{name}: card input dtype {spec.dtype} but the model takes {dtype.name}")
        if np.issubdtype(dtype, np.integer):
            scale, zero = d["quantization"]
            if not (np.isclose(scale, spec.scale, rtol=1e-4) and int(zero) == spec.zero_point):
                raise CardError(
                    f"{name}: card input quantisation (scale={spec.scale}, zero_point={spec.zero_point}) "
                    f"differs from the model's (scale={scale}, zero_point={zero})"
                )
        self.input_name = spec.name
        self.input_dtype = dtype
        self.input_shape = (1, *want)
        self._lut = _input_lut(self.card, dtype)
        # float32 over 0..255: the table is the identity, so a cast replaces the gather (decided once, not per image)
        self._cast_input = self._lut is not None and dtype == np.float32 and spec.value_range == (0.0, 255.0)
        self._input = np.zeros(self.input_shape, dtype=dtype)  # preallocated, reused every call

    def _check_outputs(self, outputs: dict[str, dict[str, Any]]) -> None:
        name = str(self.path)
        # (card key, signature output name, scale, zero point, is quantised): dequantise any int dtype
        self._outputs: list[tuple[str, str, np.float32, np.float32, bool]] = []
        for key, sig_name in self.card.outputs.items():
            if sig_name not in outputs:
                raise CardError(
                    f"{name}: card output '{key}' -> '{sig_name}' is not a signature output. "
                    f"Signature outputs: {sorted(outputs)}"
                )
            d = outputs[sig_name]
            size = int(d["shape"][-1])
            classes = self.card.output_classes(key)
            if size != len(classes):
                raise CardError(f"{name}: output '{sig_name}' has {size} scores but the card lists {len(classes)} classes for '{key}'")
            quantised = np.issubdtype(np.dtype(d["dtype"]), np.integer)
            scale, zero = d["quantization"] if quantised else (1.0, 0)
            if quantised and scale == 0:
                raise CardError(f"{name}: integer output '{sig_name}' has no quantisation parameters")
            self._outputs.append((key, sig_name, np.float32(scale), np.float32(zero), quantised))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input.height, self.card.input.width

    def set_input(self, pixels: np.ndarray) -> np.ndarray:
        """The model input for one (H, W, 3) uint8 image: cast or quantised per the card (reuses a buffer)."""
        if self._lut is None:
            if pixels.dtype == np.uint8 and pixels.flags.c_contiguous and pixels.shape == self.input_shape[1:]:
                return pixels[None]  # a view: the signature runner's SetTensor is then the only copy
            self._input[0] = pixels
        elif self._cast_input:
            np.copyto(self._input[0], pixels, casting="unsafe")
        else:
            np.take(self._lut, pixels, out=self._input[0])
        return self._input

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Float scores (K,) per card output key (a head, or ``joint``) for one uint8 image."""
        try:
            result = self.runner(**{self.input_name: self.set_input(pixels)})
        except Exception as e:  # e.g. "Input tensor 47 lacks data": the model is broken, not the image
            raise ModelError(f"{self.path}: invoke failed ({first_line(e)})") from None
        out = {}
        for key, sig_name, scale, zero, quantised in self._outputs:
            raw = result[sig_name][0]
            out[key] = (raw.astype(np.float32) - zero) * scale if quantised else raw
        return out
