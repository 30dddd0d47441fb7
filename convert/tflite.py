"""One Keras model -> TFLite flatbuffer bytes at one precision, built-in ops only.

How TF 2.21 + Keras 3 convert (checked, not assumed): ``TFLiteConverter.from_keras_model`` exports
the model's ``serve`` endpoint; the file gets one signature ``serving_default`` whose input is
named after the Keras input (``image``) and whose outputs are named after the dict keys of a
dict-output model (``make``, ``type``) or ``output_0`` for a single plain output. The caller reads
the names back from the converted file (``convert.inspect``) rather than trusting this.

Precisions:

- ``float32``: no optimisation.
- ``float16``: weights stored as float16, dequantized to float32 at load (XNNPACK may run fp16).
- ``dynamic``: weights int8, activations float; kernels quantize activations on the fly.
  Dense layers are quantized per tensor, not per channel: per-channel dense weights need
  FULLY_CONNECTED version 12, which tflite-runtime 2.14 cannot load (seen with TF 2.21).
- ``int8``: full-integer. Input uint8 (raw pixels go straight in; scale/zero_point from
  calibration land in the card), every op int8, outputs uint8 softmax (scale 1/256): the edge
  dequantizes them through the output tensor's quantisation parameters. uint8 outputs rather
  than float32 keep the graph integer end to end (no trailing DEQUANTIZE op) and are what the
  contract's "dequantize outputs" means; the precision lost (1/256 per probability) is far below
  the int8 activations' own error.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from convert.errors import ConvertError, UnsupportedOpError
from convert.specs import PrecisionSpec, resolve_precision

DENSE_PER_CHANNEL = False


@dataclass(frozen=True)
class ConversionSettings:
    """Everything that decides a converted file's bytes besides the source model."""

    precision: str
    calibration_images: int = 0
    """Number of representative images (int8 only; 0 otherwise)."""
    calibration_seed: int = 0
    int8_output_dtype: str = "uint8"
    """Output dtype of a calibrated file (kept under this key: earlier convert.json files use it)."""
    dense_per_channel: bool = DENSE_PER_CHANNEL

    @property
    def spec(self) -> PrecisionSpec:
        return resolve_precision(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """The settings as convert.json records them (a changed value reconverts the file)."""
        d = asdict(self)
        if not self.spec.calibrated:
            d.pop("calibration_images")
            d.pop("calibration_seed")
            d.pop("int8_output_dtype")
        return d


def settings_for(precision: str, calibration_images: int = 0, seed: int = 0) -> ConversionSettings:
    """The settings of ``precision`` (calibration only matters for calibrated, full-integer ones)."""
    spec = resolve_precision(precision)
    if spec.calibrated:
        return ConversionSettings(precision, int(calibration_images), int(seed), spec.output_dtype)
    return ConversionSettings(precision)


# `loc(callsite(fused["Cumprod:", "functional_1/my_layer_1/Cumprod@__inference_..."] ...)): 'tf.Cumprod' op is neither...`
_LOC_RE = re.compile(r'fused\["(?P<op>[\w.]+):", "(?P<path>[^"@]+)@[^\n]*?\'tf\.(?P<tfop>\w+)\' op is neither')
_OP_RE = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def _unsupported_op_message(model: Any, text: str) -> str | None:
    """One line naming the unsupported TF op(s) and the Keras layer(s) they come from, or None."""
    ops = list(dict.fromkeys(_OP_RE.findall(text)))
    if not ops:
        return None
    layer_names = {layer.name for layer in _walk_layers(model)}
    found: dict[str, str] = {}
    for m in _LOC_RE.finditer(text):
        # Path segments are graph scopes: model name, then layer names, Keras 3 adds a "_1" suffix.
        for seg in m.group("path").split("/")[1:]:
            for cand in (seg, re.sub(r"_\d+$", "", seg)):
                if cand in layer_names:
                    found.setdefault(m.group("tfop"), cand)
                    break
            if m.group("tfop") in found:
                break
    parts = [f"{op} (layer '{found[op]}')" if op in found else op for op in ops]
    return (
        f"needs TensorFlow ops outside the TFLite built-ins (Flex/SELECT_TF_OPS is not allowed): "
        f"{', '.join(parts)}"
    )


def _walk_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _walk_layers(layer)


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Send file descriptors 1 and 2 to a scratch file: the converter's C++ side prints calibration
    chatter ("fully_quantize: 0, ...") that would bury the CLI's one-line results. Errors still
    arrive as the exception."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 1)
            os.dup2(scratch.fileno(), 2)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def _representative(images: np.ndarray, input_name: str) -> Any:
    def gen() -> Iterator[dict[str, np.ndarray]]:
        for img in images:
            yield {input_name: img[None].astype(np.float32)}

    return gen


@contextlib.contextmanager
def exported(model: Any) -> Iterator[str | None]:
    """The model exported once as a SavedModel (inference call, ``serving_default``), for several
    conversions; yields None when export fails (``convert_keras`` then converts the model itself).

    Same export as ``from_keras_model`` does for Keras 3 (``training=False``), done once instead of
    once per precision: the files are byte-identical, a MobileNetV2 converts ~5 s faster each.
    """
    import functools

    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="polyhead-export-") as tmp:
        try:
            archive = keras.export.ExportArchive()
            archive.track(model)
            spec = [tf.TensorSpec(x.shape, x.dtype, name=x.name) for x in model.inputs]
            archive.add_endpoint("serve", functools.partial(model.__call__, training=False), spec)
            with contextlib.redirect_stdout(io.StringIO()):
                archive.write_out(tmp, verbose=False)
            path: str | None = tmp
        except Exception:  # noqa: BLE001 - from_keras_model remains the fallback
            path = None
        yield path


def convert_keras(
    model: Any,
    precision: str,
    representative_images: np.ndarray | None = None,
    settings: ConversionSettings | None = None,
    saved_model_dir: str | None = None,
) -> bytes:
    """Convert a Keras model to TFLite bytes at ``precision`` with built-in ops only.

    ``representative_images``: uint8 (N, H, W, 3) raw pixels, required for ``int8``. A model that
    would need Flex ops raises ``UnsupportedOpError`` naming the op and the layer.
    ``saved_model_dir``: the model already ``exported`` (saves re-exporting per precision).
    """
    import tensorflow as tf

    settings = settings or settings_for(precision, 0 if representative_images is None else len(representative_images))
    spec = settings.spec
    with contextlib.redirect_stdout(io.StringIO()):  # model.export() prints its endpoints
        if saved_model_dir:
            conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
        else:
            conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.allow_custom_ops = False
    if spec.optimise:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv._experimental_disable_per_channel_quantization_for_dense_layers = not settings.dense_per_channel
    if spec.weight_dtype:
        conv.target_spec.supported_types = [tf.dtypes.as_dtype(spec.weight_dtype)]
    if spec.calibrated:
        if representative_images is None or len(representative_images) == 0:
            raise ConvertError(f"{precision} needs calibration images; none were given")
        input_name = model.inputs[0].name if getattr(model, "inputs", None) else "image"
        conv.representative_dataset = _representative(np.asarray(representative_images), input_name)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.dtypes.as_dtype(spec.input_dtype)
        conv.inference_output_type = tf.dtypes.as_dtype(settings.int8_output_dtype)
    try:
        # The converter's calibrator uses tf.lite.Interpreter internally and warns about it; our
        # own runs go through ai-edge-litert (edge.runtime.interpreter).
        with _native_output_silenced(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(conv.convert())
    except Exception as e:  # noqa: BLE001 - the converter's errors are long MLIR dumps
        text = str(e)
        msg = _unsupported_op_message(model, text)
        if msg:
            raise UnsupportedOpError(msg) from None
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text.strip()[:300])
        raise ConvertError(f"{precision} conversion failed: {type(e).__name__}: {first[:300]}") from None
