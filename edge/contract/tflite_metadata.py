"""Read a model's standard TFLite Metadata (what MediaPipe Tasks reads), with the standard library only.

``polyhead-edge info`` uses this to show that a file carries the metadata MediaPipe and Android
Studio need: the ``TFLITE_METADATA`` entry of the model's ``metadata`` vector, whose buffer is a
``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs`` of tensorflow/tflite-support,
identifier ``M001``), and the label files it names, which must be members of the archive appended
to the model. The edge has no flatbuffers package (tflite-runtime does not bring one), so this reads the
few fields shown with ``edge.safety.flatbuf``'s bounds-checked tables, and a malformed file gives a
one-line ``MetadataReadError``, never a traceback. Field slots follow the schemas' field order.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from dataclasses import dataclass

from edge.errors import PolyheadError, first_line
from edge.safety import flatbuf

_U32 = struct.Struct("<I")

METADATA_NAME = "TFLITE_METADATA"

# Field slots (declaration order; a union takes two: its type, then its value).
_MODEL_BUFFERS, _MODEL_METADATA = flatbuf.ModelF.BUFFERS, 6  # tflite Model
_METADATA_NAME, _METADATA_BUFFER = 0, 1  # tflite Metadata
_BUFFER_DATA = flatbuf.BufferF.DATA  # tflite Buffer
_MM_NAME, _MM_VERSION, _MM_SUBGRAPHS, _MM_MIN_PARSER = 0, 2, 3, 7  # ModelMetadata
_SG_INPUTS, _SG_OUTPUTS = 2, 3  # SubGraphMetadata
_TM_NAME, _TM_PROCESS_UNITS, _TM_FILES = 0, 4, 6  # TensorMetadata
_PU_OPTIONS_TYPE, _PU_OPTIONS = 0, 1  # ProcessUnit
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union tag
_NO_MEAN, _NO_STD = 0, 1  # NormalizationOptions
_AF_NAME = 0  # AssociatedFile


class MetadataReadError(PolyheadError):
    """A model's TFLite Metadata is present but malformed."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's metadata: its name, label files, and normalisation (mean, std) if any."""

    name: str
    label_files: tuple[str, ...] = ()
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None


@dataclass(frozen=True)
class StandardMetadata:
    """The TFLite Metadata fields polyhead-edge shows, and which label files the archive lacks."""

    name: str
    version: str
    min_parser_version: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    missing_files: tuple[str, ...]


class _Table(flatbuf.Table):
    """``edge.safety.flatbuf``'s bounds-checked table, plus the two vector kinds metadata needs."""

    def _vector(self, i: int, elem_size: int) -> tuple[int, int]:
        at = self._target(i)
        if not at:
            return 0, 0
        n = self._read(_U32, at)
        if at + 4 + n * elem_size > len(self.buf):
            raise MetadataReadError(f"vector of {n} elements at {at} runs past the end of the flatbuffer")
        return at + 4, n

    def tables(self, i: int) -> list[_Table]:
        return [_Table(t.buf, t.pos) for t in super().tables(i)]

    def table(self, i: int) -> _Table | None:
        t = super().table(i)
        return None if t is None else _Table(t.buf, t.pos)

    def text(self, i: int) -> str:
        return self.string(i).decode("utf-8", "replace")

    def floats(self, i: int) -> tuple[float, ...]:
        start, n = self._vector(i, 4)
        return struct.unpack_from(f"<{n}f", self.buf, start) if n else ()

    def ubytes(self, i: int) -> bytes:
        start, n = self._vector(i, 1)
        return bytes(self.buf[start:start + n])


def _root(buf: bytes, identifier: bytes) -> _Table:
    if len(buf) < 8 or buf[4:8] != identifier:
        raise MetadataReadError(f"not a flatbuffer with identifier {identifier.decode()}")
    return _Table(buf, _U32.unpack_from(buf, 0)[0])


def _tensor(t: _Table) -> TensorInfo:
    files = tuple(f.text(_AF_NAME) for f in t.tables(_TM_FILES))
    norm = None
    for unit in t.tables(_TM_PROCESS_UNITS):
        options = unit.table(_PU_OPTIONS)
        if unit.u8(_PU_OPTIONS_TYPE) == _NORMALIZATION_OPTIONS and options is not None:
            norm = (options.floats(_NO_MEAN), options.floats(_NO_STD))
    return TensorInfo(t.text(_TM_NAME), files, norm)


def metadata_buffer(model: bytes) -> bytes | None:
    """The ``TFLITE_METADATA`` buffer of a TFLite flatbuffer, or None when the model has none."""
    root = _root(model, b"TFL3")
    buffers = root.tables(_MODEL_BUFFERS)
    for entry in root.tables(_MODEL_METADATA):
        if entry.text(_METADATA_NAME) == METADATA_NAME:
            index = entry.scalar(_METADATA_BUFFER)
            if index >= len(buffers):
                raise MetadataReadError(f"{METADATA_NAME} names buffer {index}; the model has {len(buffers)}")
            return buffers[index].ubytes(_BUFFER_DATA)
    return None


def read_standard_metadata(data: bytes, name: str = "<bytes>") -> StandardMetadata | None:
    """The TFLite Metadata of a model file's bytes (model, then the appended archive), or None.

    Reads only the metadata buffer and the archive's member names; nothing is inflated or extracted.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            members = {i.filename for i in infos}
            model_end = min((i.header_offset for i in infos), default=len(data))
    except Exception:  # untrusted bytes: no readable archive means no label files
        members, model_end = set(), len(data)
    try:
        raw = metadata_buffer(data[:model_end])
        if raw is None:
            return None
        meta = _root(raw, b"M001")
        subgraphs = meta.tables(_MM_SUBGRAPHS)
        inputs = tuple(_tensor(t) for t in subgraphs[0].tables(_SG_INPUTS)) if subgraphs else ()
        outputs = tuple(_tensor(t) for t in subgraphs[0].tables(_SG_OUTPUTS)) if subgraphs else ()
        result = StandardMetadata(meta.text(_MM_NAME), meta.text(_MM_VERSION), meta.text(_MM_MIN_PARSER),
                                  inputs, outputs,
                                  tuple(f for t in inputs + outputs for f in t.label_files if f not in members))
    except (MetadataReadError, flatbuf.FlatbufferError) as e:
        raise MetadataReadError(f"{name}: malformed TFLite Metadata ({e})") from None
    except (struct.error, RecursionError, IndexError) as e:
        raise MetadataReadError(f"{name}: malformed TFLite Metadata ({type(e).__name__})") from None
    return result


def summary(path: str | os.PathLike) -> dict:
    """What ``polyhead-edge info`` shows about a file's TFLite Metadata, as a JSON-ready dict."""
    try:
        with open(path, "rb") as f:
            meta = read_standard_metadata(f.read(), str(path))
    except (OSError, MetadataReadError) as e:
        return {"present": False, "error": first_line(e, None)}
    if meta is None:
        return {"present": False}
    image = meta.inputs[0] if meta.inputs else None
    return {"present": True, "name": meta.name, "version": meta.version,
            "min_parser_version": meta.min_parser_version,
            "input_normalization": ({"mean": list(image.normalization[0]), "std": list(image.normalization[1])}
                                    if image is not None and image.normalization else None),
            "outputs": [{"name": t.name, "label_files": list(t.label_files)} for t in meta.outputs],
            "missing_label_files": list(meta.missing_files)}


def format_summary(d: dict | None) -> str:
    """``summary`` as the one line ``info`` prints."""
    head = "TFLite Metadata (MediaPipe Tasks): "
    if not d or not d.get("present"):
        return head + (f"INVALID: {d['error']}" if d and d.get("error") else "none (written before polyhead added it)")
    outs = ", ".join(f"{o['name']} [{', '.join(o['label_files']) or 'no labels'}]" for o in d["outputs"])
    norm = d.get("input_normalization")
    line = head + f"yes (parser >= {d['min_parser_version']}); outputs in tensor order: {outs}"
    line += f"; input mean {norm['mean']} std {norm['std']}" if norm else "; input: raw uint8 pixels"
    if d["missing_label_files"]:
        line += f"; MISSING label files: {', '.join(d['missing_label_files'])}"
    return line
