"""A semantic check of a .tflite file before any interpreter sees it.

The interpreter verifies the flatbuffer's *structure* (offsets, bounds); it does not check what the
graph means, and files that pass its verifier still crash it (a signature naming a subgraph that does
not exist, a signature input that is a constant tensor: SetTensor then writes into the read-only
mapped file), hang it (a WHILE whose condition is a constant true) or exhaust memory (an 8192x8192
input). This module refuses such files with one line naming the file and the rule broken:

- ``subgraphs``: exactly one subgraph (polyhead's converter never emits control flow);
- ``signature``: the card's signature exists, its subgraph exists, its inputs and outputs are in range,
  are the subgraph's inputs/outputs, and no input is a constant tensor;
- ``operators``: every operator is on the allow-list of what polyhead's converter emits
  (tests/converter_ops.py derives it), custom operators and control flow are refused;
- ``indices``: every operator code, tensor and buffer index is in range;
- ``dataflow``: operators are in dataflow order (each reads only tensors that exist by then), none
  writes a constant, and every subgraph output is produced;
- ``quantization``: scales finite and in a sane range, zero points inside their type, per-channel
  counts matching the shape (an absurd scale makes an int8 kernel corrupt the heap);
- ``size``: the input's pixels and the arena estimated from tensor shapes are under ``ModelLimits``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from edge.errors import ModelError
from edge.flatbuf import (
    BufferF,
    FlatbufferError,
    ModelF,
    OperatorCodeF,
    OperatorF,
    QuantizationF,
    SignatureDefF,
    SubGraphF,
    Table,
    TensorF,
    TensorMapF,
    root,
)

ALLOWED_OPERATORS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
    21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 41: "SUB", 45: "STRIDED_SLICE",
    77: "SHAPE", 83: "PACK", 114: "QUANTIZE", 117: "HARD_SWISH",
}
"""BuiltinOperator code -> name: what polyhead's converter emits for every registered backbone,
approach and precision (tests/converter_ops.py prints it; a test keeps this list in step)."""

# TensorType -> bytes per element (types a polyhead model can hold; any other type is refused).
_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 15: 4, 16: 2}
_MAX_RANK = 8


@dataclass(frozen=True)
class ModelLimits:
    """Caps on what a model may ask of the device (the CLI's --max-input-pixels and --max-arena-mb)."""

    max_input_pixels: int = 2048 * 2048
    max_arena_mb: float = 512.0


DEFAULT_LIMITS = ModelLimits()


class ModelCheckError(ModelError):
    """A .tflite file breaks a rule of the semantic model check (one line naming the file and rule)."""


@dataclass(frozen=True)
class ModelSummary:
    """What the check found: operator names, tensor count, the arena estimate in MB."""

    operators: tuple[str, ...]
    tensors: int
    arena_mb: float


class _Refused(Exception):
    def __init__(self, rule: str, detail: str):
        super().__init__(rule, detail)
        self.rule, self.detail = rule, detail


def check_model_file(path: str | os.PathLike, signature: str | None = "serving_default",
                     limits: ModelLimits = DEFAULT_LIMITS) -> ModelSummary:
    """Check the .tflite at ``path`` (a regular file; its card, if any, is ignored). Raises
    ``ModelCheckError``. ``signature`` None checks every signature the file has."""
    import mmap

    from edge.paths import PathError, open_regular

    try:
        with open_regular(path) as f:
            if os.fstat(f.fileno()).st_size < 8:
                return check_model(f.read(), str(path), signature, limits)
            # Mapped, not read: the check touches only the tables, never the weights.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return check_model(data, str(path), signature, limits)
    except PathError as e:
        raise ModelError(str(e)) from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None


def check_model(data: bytes | memoryview, name: str = "<bytes>", signature: str | None = "serving_default",
                limits: ModelLimits = DEFAULT_LIMITS) -> ModelSummary:
    """Check a .tflite flatbuffer (trailing card bytes are ignored). Raises ``ModelCheckError``."""
    try:
        return _check(data, signature, limits)
    except _Refused as e:
        raise ModelCheckError(f"{name}: refused by the model check ({e.rule}): {e.detail}") from None
    except (FlatbufferError, OverflowError, MemoryError) as e:
        raise ModelCheckError(f"{name}: refused by the model check (flatbuffer): {e}") from None


def _check(data: bytes | memoryview, signature: str | None, limits: ModelLimits) -> ModelSummary:
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise _Refused("flatbuffer", "not a TFLite file (no TFL3 identifier)")
    model = root(data)
    subgraphs = model.tables(ModelF.SUBGRAPHS)
    if len(subgraphs) != 1:
        raise _Refused("subgraphs", f"{len(subgraphs)} subgraphs; a polyhead model has exactly one")
    n_buffers = model.vector_length(ModelF.BUFFERS)
    constant = _constant_buffers(model.tables(ModelF.BUFFERS), len(data))
    ops = _operator_names(model.tables(ModelF.OPERATOR_CODES))
    graph = subgraphs[0]
    tensors = graph.tables(SubGraphF.TENSORS)
    shapes, is_const = _tensors(tensors, n_buffers, constant)
    inputs, outputs = graph.ints(SubGraphF.INPUTS), graph.ints(SubGraphF.OUTPUTS)
    for kind, idx in (("input", inputs), ("output", outputs)):
        bad = [i for i in idx if not 0 <= i < len(tensors)]
        if bad:
            raise _Refused("indices", f"subgraph {kind} tensor {bad[0]} is out of range (0..{len(tensors) - 1})")
    _signatures(model.tables(ModelF.SIGNATURE_DEFS), signature, len(subgraphs), inputs, outputs, is_const)
    used = _dataflow(graph.tables(SubGraphF.OPERATORS), ops, len(tensors), inputs, outputs, is_const)
    arena_mb = _sizes(shapes, is_const, inputs, limits)
    return ModelSummary(tuple(sorted(set(used))), len(tensors), arena_mb)


def _constant_buffers(buffers: list[Table], file_size: int) -> set[int]:
    """Indices of buffers that hold data (inline, or at an offset into the file)."""
    constant = set()
    for i, b in enumerate(buffers):
        offset, size = b.u64(BufferF.OFFSET), b.u64(BufferF.SIZE)
        if offset > 1 and offset + size > file_size:
            raise _Refused("indices", f"buffer {i} points past the end of the file")
        if b.vector_length(BufferF.DATA) or (offset > 1 and size):
            constant.add(i)
    return constant


def _operator_names(codes: list[Table]) -> list[str]:
    names = []
    for i, oc in enumerate(codes):
        # Codes above 127 live in builtin_code; the deprecated int8 field holds the rest.
        code = max(oc.i32(OperatorCodeF.BUILTIN_CODE), oc.i8(OperatorCodeF.DEPRECATED_BUILTIN_CODE))
        if code not in ALLOWED_OPERATORS:
            what = "a custom operator" if code == 32 else f"builtin operator {code}"
            raise _Refused("operators", f"operator code {i} is {what}, not one polyhead's converter emits "
                           "(no control flow, no custom ops)")
        names.append(ALLOWED_OPERATORS[code])
    return names


def _tensors(tensors: list[Table], n_buffers: int, constant: set[int]) -> tuple[list[tuple[int, list[int]]], list[bool]]:
    """(itemsize, shape) and is-constant per tensor, refusing bad buffer indices, types and shapes."""
    shapes, is_const, spans = [], [], []
    for i, t in enumerate(tensors):
        buffer = t.scalar(TensorF.BUFFER)
        if buffer >= max(n_buffers, 1):
            raise _Refused("indices", f"tensor {i} names buffer {buffer}; the file has {n_buffers}")
        ttype = t.u8(TensorF.TYPE)
        if ttype not in _ITEMSIZE:
            raise _Refused("tensors", f"tensor {i} has type {ttype}, not one a polyhead model holds")
        shape = t.ints(TensorF.SHAPE)
        if len(shape) > _MAX_RANK or any(d < 0 for d in shape):
            raise _Refused("tensors", f"tensor {i} has shape {shape[:_MAX_RANK + 1]}")
        if t.u8(TensorF.IS_VARIABLE):
            raise _Refused("tensors", f"tensor {i} is a variable (state); a polyhead model has none")
        q = t.table(TensorF.QUANTIZATION)
        if q is not None:
            _quantization(i, q, ttype, shape, spans)
        shapes.append((_ITEMSIZE[ttype], shape))
        is_const.append(buffer in constant)
    _quantization_values(tensors[0].buf if tensors else b"", spans)
    return shapes, is_const


# Zero-point range per integer TensorType (uint8, int8, int16); int32 biases must use zero.
_ZERO_RANGE = {3: (0, 255), 9: (-128, 127), 7: (-32768, 32767), 2: (0, 0)}
_SCALE_RANGE = (1e-20, 1e4)  # real files: 7e-13 (int32 biases) .. 1.0


def _quantization(i: int, q: Table, ttype: int, shape: list[int], spans: list) -> None:
    """Refuse quantisation parameters no converter writes: custom details, a per-channel dimension or
    count that does not match the shape. Scales and zero points are collected in ``spans`` and
    checked all at once by ``_quantization_values`` (thousands of per-channel values per model)."""
    scales = q.span(QuantizationF.SCALE, 4)
    zeros = q.span(QuantizationF.ZERO_POINT, 8)
    if q.u8(QuantizationF.DETAILS_TYPE):
        raise _Refused("quantization", f"tensor {i} has custom quantisation details")
    dim = q.i32(QuantizationF.QUANTIZED_DIMENSION)
    if scales[1] > 1 or zeros[1] > 1:
        if not 0 <= dim < len(shape) or scales[1] != shape[dim] or zeros[1] not in (0, 1, scales[1]):
            raise _Refused("quantization", f"tensor {i} has {scales[1]} per-channel scales for shape {shape} "
                           f"(dimension {dim})")
    spans.append((i, ttype, scales, zeros))


def _outside(buf, items: list[tuple[int, int, int]], dtype: str, lo: float, hi: float) -> int | None:
    """The first tensor whose vector (``items``: tensor, offset, count) has a value outside lo..hi
    (or NaN), checked in one numpy pass; None if all are inside."""
    import numpy as np

    items = [it for it in items if it[2]]
    if not items:
        return None
    values = np.concatenate([np.frombuffer(buf, dtype, count=n, offset=off) for _, off, n in items])
    ok = values.min() >= lo and values.max() <= hi  # NaN fails both comparisons
    del values  # a mapped file cannot close while a view of it is alive
    if ok:
        return None
    for i, off, n in items:
        v = np.frombuffer(buf, dtype, count=n, offset=off)
        ok = v.min() >= lo and v.max() <= hi
        del v
        if not ok:
            return i
    return None


def _quantization_values(buf, spans: list) -> None:
    """Scales finite and within _SCALE_RANGE, zero points inside their type (an absurd scale makes an
    int8 kernel compute a multiplier out of range and corrupt the heap)."""
    lo, hi = _SCALE_RANGE
    bad = _outside(buf, [(i, *sc) for i, _, sc, _ in spans], "<f4", lo, hi)
    if bad is not None:
        raise _Refused("quantization", f"tensor {bad} has a scale outside {lo:g}..{hi:g}")
    for ttype in sorted({t for _, t, _, _ in spans}):
        zlo, zhi = _ZERO_RANGE.get(ttype, (-(2**31), 2**31 - 1))
        bad = _outside(buf, [(i, *zp) for i, t, _, zp in spans if t == ttype], "<i8", zlo, zhi)
        if bad is not None:
            raise _Refused("quantization", f"tensor {bad} has a zero point outside {zlo}..{zhi}")


def _signatures(sigs: list[Table], wanted: str | None, n_subgraphs: int, inputs: list[int], outputs: list[int],
                is_const: list[bool]) -> None:
    keys = []
    for s in sigs:
        key = s.string(SignatureDefF.SIGNATURE_KEY).decode("utf-8", "replace")
        keys.append(key)
        if wanted is not None and key != wanted:
            continue
        sub = s.scalar(SignatureDefF.SUBGRAPH_INDEX)
        if sub >= n_subgraphs:
            raise _Refused("signature", f"signature {key!r} runs subgraph {sub}; the file has {n_subgraphs}")
        for kind, field, allowed in (("input", SignatureDefF.INPUTS, inputs), ("output", SignatureDefF.OUTPUTS, outputs)):
            for m in s.tables(field):
                ti = m.scalar(TensorMapF.TENSOR_INDEX)
                if ti not in allowed:
                    raise _Refused("signature", f"signature {key!r} {kind} tensor {ti} is not a subgraph {kind}")
                if kind == "input" and is_const[ti]:
                    raise _Refused("signature", f"signature {key!r} input tensor {ti} is a constant")
    if wanted is not None and wanted not in keys:
        raise _Refused("signature", f"no signature {wanted!r} (the file has {len(keys)})")
    if any(is_const[i] for i in inputs):
        raise _Refused("signature", "a subgraph input is a constant tensor")


def _dataflow(operators: list[Table], ops: list[str], n_tensors: int, inputs: list[int], outputs: list[int],
              is_const: list[bool]) -> list[str]:
    """Refuse operators out of dataflow order, bad indices, writes to constants; the op names used."""
    ready = list(is_const)
    for i in inputs:
        ready[i] = True
    used = []
    for n, op in enumerate(operators):
        code = op.scalar(OperatorF.OPCODE_INDEX)
        if code >= len(ops):
            raise _Refused("indices", f"operator {n} uses operator code {code}; the file has {len(ops)}")
        used.append(ops[code])
        for t in op.ints(OperatorF.INPUTS):
            if t == -1:
                continue  # an optional input left out
            if not 0 <= t < n_tensors:
                raise _Refused("indices", f"operator {n} ({ops[code]}) reads tensor {t}; the subgraph has {n_tensors}")
            if not ready[t]:
                raise _Refused("dataflow", f"operator {n} ({ops[code]}) reads tensor {t} before any operator writes it")
        for t in op.ints(OperatorF.OUTPUTS) + op.ints(OperatorF.INTERMEDIATES):
            if not 0 <= t < n_tensors:
                raise _Refused("indices", f"operator {n} ({ops[code]}) writes tensor {t}; the subgraph has {n_tensors}")
            if is_const[t] or t in inputs:
                raise _Refused("dataflow", f"operator {n} ({ops[code]}) writes tensor {t}, a constant or input")
            ready[t] = True
    missing = [t for t in outputs if not ready[t]]
    if missing:
        raise _Refused("dataflow", f"subgraph output tensor {missing[0]} is never written")
    return used


def _sizes(shapes: list[tuple[int, list[int]]], is_const: list[bool], inputs: list[int], limits: ModelLimits) -> float:
    """The arena estimate in MB (every non-constant tensor at once: an upper bound), refusing caps."""
    for i in inputs:
        shape = shapes[i][1]
        pixels = shape[1] * shape[2] if len(shape) == 4 else _count(shape)
        if pixels > limits.max_input_pixels:
            raise _Refused("size", f"input tensor {i} has {pixels} pixels {shape}, over the limit of "
                           f"{limits.max_input_pixels} (--max-input-pixels)")
    total = sum(size * _count(shape) for (size, shape), const in zip(shapes, is_const, strict=True) if not const)
    arena_mb = total / (1 << 20)
    if arena_mb > limits.max_arena_mb:
        raise _Refused("size", f"tensors need about {arena_mb:.0f} MB, over the limit of {limits.max_arena_mb:g} MB "
                       "(--max-arena-mb)")
    return round(arena_mb, 3)


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
