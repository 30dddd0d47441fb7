"""Standard TFLite Metadata for every polyhead file, so MediaPipe Tasks can run it unchanged.

MediaPipe's ``ImageClassifier`` (Python, Android, iOS, web) and Android Studio read a model's
labels and normalisation from TFLite Metadata: a ``ModelMetadata`` flatbuffer (schema
``metadata_schema.fbs`` of tensorflow/tflite-support, file identifier ``M001``) stored in one of the
model's buffers and named ``TFLITE_METADATA`` in the model's ``metadata`` vector, plus label files
packed as *stored* (uncompressed) members of a zip appended to the model. polyhead already appends
such a zip for its card (``metadata.json``); the label files join it (``edge.contract.card_archive``).

What is written, per file:

- the image input: RGB, its size, and for a float input the normalisation (mean, std) that maps
  pixels 0..255 onto the card's value range; a uint8 input that takes raw pixels needs none;
- one classification output per head, named after the head, each with its own label file
  (``joint``: one output whose labels are the combination names; ``separate``: one head per file);
  listed in the order of the subgraph's output tensors, which is what MediaPipe pairs them by and
  is not the signature's order;
- general info: name, description, version.

The metadata flatbuffer is built with the flatc-generated object API of the published schema
(``convert/metadata_schema_generated.py``, its header says how it was generated); the model is
re-serialised with LiteRT's own generated schema, every buffer's data 16-byte aligned as the
TFLite schema asks. The card's ``model_sha256`` is computed afterwards over these bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convert.errors import ConvertError
from edge.contract.card import ModelCard
from edge.contract.card_archive import strip_card, write_model
from edge.contract.schema import JOINT_OUTPUT
from edge.errors import first_line

METADATA_NAME = "TFLITE_METADATA"
"""Name of the model ``metadata`` entry whose buffer holds the ModelMetadata flatbuffer."""
METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
MIN_PARSER_VERSION = "1.0.0"
"""Every field written here exists since metadata schema 1.0.0 (tflite-support metadata_version.cc)."""
BUFFER_ALIGNMENT = 16
"""The TFLite schema asks for 16-byte aligned buffer data (``force_align: 16``); TF 2.21's converter
output is only 4-byte aligned in places, and LiteRT's generated ``BufferT.Pack`` aligns to 1 byte."""
LABEL_SUFFIX = "_labels.txt"
MAX_STEM_CHARS = 48


class MetadataError(ConvertError):
    """TFLite Metadata cannot be written for this model."""


def label_file_names(keys: Sequence[str]) -> dict[str, str]:
    """A safe, unique zip member name for each output key's label file: ``<stem>_labels.txt``.

    The stem keeps ASCII letters, digits, ``-`` and ``_`` of the key and turns anything else into
    ``_``: no path separator, no ``..``, no leading dot, nothing a file system or MediaPipe would
    read as a path. Keys that map to the same stem (case-insensitively: some file systems fold
    case) get ``_2``, ``_3``, ... so no label file overwrites another.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for key in keys:
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", key)[:MAX_STEM_CHARS].lstrip("_-") or "head"
        name, n = f"{stem}{LABEL_SUFFIX}", 1
        while name.lower() in taken:
            n += 1
            name = f"{stem}_{n}{LABEL_SUFFIX}"
        taken.add(name.lower())
        names[key] = name
    return names


def label_file_bytes(classes: Sequence[str]) -> bytes:
    """One class per line, UTF-8. A line break inside a class name would split it into two labels,
    so it becomes a space (the card keeps the exact name)."""
    return "".join(re.sub(r"[\r\n]+", " ", c) + "\n" for c in classes).encode("utf-8")


def output_order(tflite: bytes, card: ModelCard) -> tuple[str, ...]:
    """The card's output keys in the order of the subgraph's output tensors.

    The card maps each key to a signature output name; the interpreter maps signature names to
    tensor indices, and ``get_output_details`` lists the subgraph's outputs in tensor order.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=tflite)
        sig = interpreter.get_signature_runner(card.signature).get_output_details()
        outputs = [d["index"] for d in interpreter.get_output_details()]
    except (ValueError, RuntimeError) as e:
        raise MetadataError(f"cannot read the model's outputs: {first_line(e, 200)}") from None
    by_tensor: dict[int, str] = {}
    for key, sig_name in card.outputs.items():
        if sig_name not in sig:
            raise MetadataError(f"signature output {sig_name!r} of {key!r} is not in the model. Outputs: {sorted(sig)}")
        by_tensor[sig[sig_name]["index"]] = key
    if sorted(by_tensor) != sorted(outputs):
        raise MetadataError(
            f"the card's outputs {sorted(card.outputs)} are not the model's {len(outputs)} output tensors"
        )
    return tuple(by_tensor[i] for i in outputs)


def _normalization(card: ModelCard) -> tuple[float, float] | None:
    """(mean, std) with (pixel - mean) / std = the model's input, or None for a uint8 input.

    MediaPipe feeds a uint8 input the raw pixels and ignores normalisation for it; for a uint8
    input that does not take raw pixels (``raw_pixels_input``) its scores then differ slightly from
    polyhead's, and the input's description says so."""
    spec = card.input
    if spec.dtype == "float32":
        lo, hi = spec.value_range
        std = 255.0 / (hi - lo)
        return -lo * std + 0.0, std  # + 0.0: no -0.0 mean for a range starting at 0
    if spec.dtype == "uint8":
        return None
    raise MetadataError(f"MediaPipe cannot feed pixels to a {spec.dtype} image input (float32 or uint8 only)")


def raw_pixels_input(scale: float | None, zero_point: int | None) -> bool:
    """Whether quantising every pixel 0..255 as round(v / scale + zero_point) gives v back.

    Calibrated on 0..255 images the converter picks a scale of about 1 (e.g. 0.9999968), not 1."""
    if scale is None or zero_point is None:
        return False
    v = np.arange(256, dtype=np.float64)
    return bool(np.array_equal(np.round(v / scale + zero_point), v))


def build_metadata(card: ModelCard, order: Sequence[str], label_files: dict[str, str]) -> bytes:
    """The ModelMetadata flatbuffer (identifier ``M001``) of a file with outputs ``order``."""
    import flatbuffers

    from convert import metadata_schema_generated as md

    subgraph = md.SubGraphMetadataT()
    subgraph.name = card.variant
    subgraph.description = f"{card.approach} image classifier"
    subgraph.inputTensorMetadata = [_image_metadata(card)]
    subgraph.outputTensorMetadata = [_output_metadata(card, key, label_files[key]) for key in order]

    heads = ", ".join(f"{h} ({len(card.schema.head(h).classes)} classes)" for h in card.heads)
    meta = md.ModelMetadataT()
    meta.name = f"polyhead {card.variant} ({card.backbone or 'model'})"
    meta.description = (f"polyhead {card.approach} image classifier, heads: {heads}; "
                        f"one classification output per {'combination list' if card.approach == 'joint' else 'head'}.")
    meta.version = f"{card.precision}; converter {card.converter_version or 'unknown'}"
    meta.author = "polyhead"
    meta.subgraphMetadata = [subgraph]
    meta.minParserVersion = MIN_PARSER_VERSION

    builder = flatbuffers.Builder(1024)
    builder.Finish(meta.Pack(builder), file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


def _stats(lo: float, hi: float):
    """Value range of a tensor's data."""
    from convert import metadata_schema_generated as md

    s = md.StatsT()
    s.min, s.max = [float(lo)], [float(hi)]
    return s


def _image_metadata(card: ModelCard):
    """The image input: RGB, its size and, for a float input, the normalisation MediaPipe applies."""
    from convert import metadata_schema_generated as md

    spec = card.input
    image = md.TensorMetadataT()
    image.name = spec.name
    image.description = (f"RGB image, {spec.width}x{spec.height} pixels, {spec.dtype}; "
                         f"the model sees values in {list(spec.value_range)}")
    if spec.dtype == "uint8" and not raw_pixels_input(spec.scale, spec.zero_point):
        image.description += (f"; it expects pixels quantised with scale {spec.scale:.6g} and zero point "
                              f"{spec.zero_point}, MediaPipe feeds them raw: its scores differ slightly")
    image.content = md.ContentT()
    image.content.contentPropertiesType = md.ContentProperties.ImageProperties
    image.content.contentProperties = md.ImagePropertiesT()
    image.content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    norm = _normalization(card)
    if norm is not None:
        options = md.NormalizationOptionsT()
        options.mean, options.std = [norm[0]], [norm[1]]
        unit = md.ProcessUnitT()
        unit.optionsType, unit.options = md.ProcessUnitOptions.NormalizationOptions, options
        image.processUnits = [unit]
        image.stats = _stats(*spec.value_range)
    else:
        image.stats = _stats(0, 255)
    return image


def _output_metadata(card: ModelCard, key: str, label_file: str):
    """One classification output: probabilities over its classes, with its label file attached."""
    from convert import metadata_schema_generated as md

    classes = card.output_classes(key)
    t = md.TensorMetadataT()
    t.name = key
    what = (f"the {len(classes)} label combinations seen in training ({', '.join(card.schema.head_names)})"
            if key == JOINT_OUTPUT else f"the {len(classes)} classes of head '{key}'")
    t.description = f"Probabilities of {what}."
    t.content = md.ContentT()
    t.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    t.content.contentProperties = md.FeaturePropertiesT()
    t.stats = _stats(0.0, 1.0)
    labels = md.AssociatedFileT()
    labels.name, labels.description = label_file, f"Labels of output '{key}', one per line."
    labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
    t.associatedFiles = [labels]
    return t


def _aligned_buffer_class():
    from ai_edge_litert import schema_py_generated as tfl

    class AlignedBufferT(tfl.BufferT):
        """A model buffer whose data starts on a ``BUFFER_ALIGNMENT`` boundary.

        The generated ``BufferT.Pack`` aligns data to 1 byte only (it ignores ``force_align``)."""

        def Pack(self, builder):  # noqa: N802 (the generated API's name)
            if self.data is not None and len(self.data):
                builder.Prep(BUFFER_ALIGNMENT, len(self.data))
            return super().Pack(builder)

    return AlignedBufferT


def populate(tflite: bytes, metadata: bytes) -> bytes:
    """``tflite`` (a bare flatbuffer) re-serialised with ``metadata`` as its ``TFLITE_METADATA``.

    Like tflite-support's ``MetadataPopulator``: an existing ``TFLITE_METADATA`` buffer is replaced,
    otherwise a buffer and a ``metadata`` entry are appended; every other field is kept.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    if tflite[4:8] != TFLITE_IDENTIFIER:
        raise MetadataError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(tflite, 0))
    aligned = _aligned_buffer_class()

    def buffer(data: np.ndarray | None, offset: int = 0, size: int = 0):
        if offset or size:
            # Tensor data stored outside the flatbuffer (models over 2 GB): not re-serialisable here.
            raise MetadataError("the model keeps tensor data outside its flatbuffer (buffer offset); not supported")
        b = aligned()
        b.data = data
        return b

    model.buffers = [buffer(b.data, b.offset, b.size) for b in (model.buffers or [])]
    payload = buffer(np.frombuffer(metadata, dtype=np.uint8))
    model.metadata = list(model.metadata or [])
    entry = next((m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())), None)
    if entry is not None:
        model.buffers[entry.buffer] = payload
    else:
        model.buffers.append(payload)
        entry = tfl.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(len(tflite) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def add_metadata(tflite: bytes, card: ModelCard) -> tuple[bytes, dict[str, bytes]]:
    """The model with TFLite Metadata for ``card``, and its label files (zip member -> bytes)."""
    model = strip_card(tflite)
    order = output_order(model, card)
    names = label_file_names(order)
    files = {names[key]: label_file_bytes(card.output_classes(key)) for key in order}
    return populate(model, build_metadata(card, order, names)), files


def write_model_with_metadata(path: str | os.PathLike, tflite: bytes, card: ModelCard) -> Path:
    """Atomically write a .tflite with TFLite Metadata, its label files and the polyhead card."""
    model, files = add_metadata(tflite, card)
    return write_model(path, model, card, files=files)
