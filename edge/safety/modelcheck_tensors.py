"""The model check's tensor rules: types, shapes, buffers and quantisation (``edge.safety.modelcheck``).

Every tensor has a type a polyhead model holds, a shape of at most ``MAX_RANK`` non-negative
dimensions, a buffer that exists, and no state; its quantisation has finite scales in a sane range,
zero points inside its type and per-channel counts that match its shape (an absurd scale makes an
int8 kernel corrupt the heap). A broken rule raises ``edge.safety.modelcheck_graph.Refused``.
"""

from __future__ import annotations

from edge.safety.flatbuf import QuantizationF, Table, TensorF
from edge.safety.modelcheck_graph import Refused

# TensorType -> bytes per element (types a polyhead model can hold; any other type is refused).
ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 15: 4, 16: 2}
MAX_RANK = 8


def check_tensors(tensors: list[Table], n_buffers: int, constant: set[int]) -> tuple[list[tuple[int, list[int]]], list[bool]]:
    """(itemsize, shape) and is-constant per tensor, refusing bad buffer indices, types and shapes."""
    shapes, is_const, spans = [], [], []
    for i, t in enumerate(tensors):
        buffer = t.scalar(TensorF.BUFFER)
        if buffer >= max(n_buffers, 1):
            raise Refused("indices", f"tensor {i} names buffer {buffer}; the file has {n_buffers}")
        ttype = t.u8(TensorF.TYPE)
        if ttype not in ITEMSIZE:
            raise Refused("tensors", f"tensor {i} has type {ttype}, not one a polyhead model holds")
        shape = t.ints(TensorF.SHAPE)
        if len(shape) > MAX_RANK or any(d < 0 for d in shape):
            raise Refused("tensors", f"tensor {i} has shape {shape[:MAX_RANK + 1]}")
        if t.u8(TensorF.IS_VARIABLE):
            raise Refused("tensors", f"tensor {i} is a variable (state); a polyhead model has none")
        q = t.table(TensorF.QUANTIZATION)
        if q is not None:
            _quantization(i, q, ttype, shape, spans)
        shapes.append((ITEMSIZE[ttype], shape))
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
        raise Refused("quantization", f"tensor {i} has custom quantisation details")
    dim = q.i32(QuantizationF.QUANTIZED_DIMENSION)
    if scales[1] > 1 or zeros[1] > 1:
        if not 0 <= dim < len(shape) or scales[1] != shape[dim] or zeros[1] not in (0, 1, scales[1]):
            raise Refused("quantization", f"tensor {i} has {scales[1]} per-channel scales for shape {shape} "
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
        raise Refused("quantization", f"tensor {bad} has a scale outside {lo:g}..{hi:g}")
    for ttype in sorted({t for _, t, _, _ in spans}):
        zlo, zhi = _ZERO_RANGE.get(ttype, (-(2**31), 2**31 - 1))
        bad = _outside(buf, [(i, *zp) for i, t, _, zp in spans if t == ttype], "<i8", zlo, zhi)
        if bad is not None:
            raise Refused("quantization", f"tensor {bad} has a zero point outside {zlo}..{zhi}")
