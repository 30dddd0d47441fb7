"""A small, bounds-checked reader of the TFLite flatbuffer: only the tables and fields the semantic
model check needs (edge/safety/modelcheck.py).

Why not the runtime's ``schema_py_generated`` or the ``flatbuffers`` package: tflite-runtime 2.14
(Raspberry Pi OS's Python 3.11) ships neither, and their readers trust every offset, so a hostile
file raises anything from IndexError to struct.error mid-check. Here every read is checked against
the buffer, and a bad offset is one ``FlatbufferError``. Field numbers follow TensorFlow's
``tensorflow/compiler/mlir/lite/schema/schema.fbs``; tests compare this reader with
``ai_edge_litert.schema_py_generated`` on real files.
"""

from __future__ import annotations

import struct

from edge.errors import PolyheadError

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class FlatbufferError(PolyheadError):
    """An offset or length points outside the buffer."""


class Table:
    """A flatbuffer table at ``pos`` in ``buf``, read field by field with bounds checks."""

    __slots__ = ("buf", "pos", "_size", "_vtable", "_vsize")

    def __init__(self, buf: bytes | memoryview, pos: int):
        self.buf, self.pos, self._size = buf, pos, len(buf)
        self._vtable = -1  # read on first field access (the root's bootstrap Table has none)
        self._vsize = 0

    def _read(self, fmt: struct.Struct, at: int) -> int:
        if at < 0 or at + fmt.size > self._size:
            raise FlatbufferError(f"read of {fmt.size} bytes at {at} is outside the {self._size}-byte file")
        return fmt.unpack_from(self.buf, at)[0]

    def _field(self, i: int) -> int:
        """Absolute position of field ``i``'s value, or 0 if the field is absent."""
        if self._vtable < 0:
            self._vtable = self.pos - self._read(_I32, self.pos)
            self._vsize = self._read(_U16, self._vtable)
        slot = 4 + 2 * i
        if slot + 2 > self._vsize:
            return 0
        off = self._read(_U16, self._vtable + slot)
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: struct.Struct = _U32, default: int = 0) -> int:
        at = self._field(i)
        return self._read(fmt, at) if at else default

    def u8(self, i: int, default: int = 0) -> int:
        return self.scalar(i, _U8, default)

    def i8(self, i: int, default: int = 0) -> int:
        return self.scalar(i, _I8, default)

    def i32(self, i: int, default: int = 0) -> int:
        return self.scalar(i, _I32, default)

    def u64(self, i: int, default: int = 0) -> int:
        return self.scalar(i, _U64, default)

    def _target(self, i: int) -> int:
        at = self._field(i)
        return at + self._read(_U32, at) if at else 0

    def vector_length(self, i: int) -> int:
        """Number of elements of vector field ``i`` (0 if absent)."""
        at = self._target(i)
        if not at:
            return 0
        n = self._read(_U32, at)
        if at + 4 + n > len(self.buf):  # even a vector of bytes must fit
            raise FlatbufferError(f"vector of {n} elements at {at} runs past the end of the file")
        return n

    def ints(self, i: int) -> list[int]:
        """Vector field ``i`` of int32."""
        at = self._target(i)
        if not at:
            return []
        n = self._read(_U32, at)
        if at + 4 + 4 * n > len(self.buf):
            raise FlatbufferError(f"int vector of {n} at {at} runs past the end of the file")
        return list(struct.unpack_from(f"<{n}i", self.buf, at + 4))

    def span(self, i: int, itemsize: int) -> tuple[int, int]:
        """(offset of the first element, count) of vector field ``i`` of fixed-size scalars, bounds
        checked; (0, 0) if absent. For reading many vectors at once (numpy, no per-element Python)."""
        at = self._target(i)
        if not at:
            return 0, 0
        n = self._read(_U32, at)
        if at + 4 + itemsize * n > self._size:
            raise FlatbufferError(f"vector of {n} at {at} runs past the end of the file")
        return at + 4, n

    def tables(self, i: int) -> list[Table]:
        """Vector field ``i`` of tables."""
        at = self._target(i)
        if not at:
            return []
        n = self._read(_U32, at)
        if at + 4 + 4 * n > len(self.buf):
            raise FlatbufferError(f"table vector of {n} at {at} runs past the end of the file")
        return [Table(self.buf, p + self._read(_U32, p)) for p in range(at + 4, at + 4 + 4 * n, 4)]

    def table(self, i: int) -> Table | None:
        at = self._target(i)
        return Table(self.buf, at) if at else None

    def string(self, i: int) -> bytes:
        at = self._target(i)
        if not at:
            return b""
        n = self._read(_U32, at)
        if at + 4 + n > len(self.buf):
            raise FlatbufferError(f"string of {n} bytes at {at} runs past the end of the file")
        return bytes(self.buf[at + 4 : at + 4 + n])


def root(buf: bytes | memoryview) -> Table:
    """The root table (a TFLite ``Model``)."""
    t = Table(buf, 0)
    return Table(buf, t._read(_U32, 0))


# Field numbers in schema.fbs (vtable slot order).
class ModelF:
    OPERATOR_CODES, SUBGRAPHS, BUFFERS, SIGNATURE_DEFS = 1, 2, 4, 7


class OperatorCodeF:
    DEPRECATED_BUILTIN_CODE, CUSTOM_CODE, VERSION, BUILTIN_CODE = 0, 1, 2, 3


class SubGraphF:
    TENSORS, INPUTS, OUTPUTS, OPERATORS = 0, 1, 2, 3


class TensorF:
    SHAPE, TYPE, BUFFER, NAME, QUANTIZATION, IS_VARIABLE = 0, 1, 2, 3, 4, 5


class QuantizationF:
    SCALE, ZERO_POINT, DETAILS_TYPE, QUANTIZED_DIMENSION = 2, 3, 4, 6


class OperatorF:
    OPCODE_INDEX, INPUTS, OUTPUTS, INTERMEDIATES = 0, 1, 2, 8


class BufferF:
    DATA, OFFSET, SIZE = 0, 1, 2


class SignatureDefF:
    INPUTS, OUTPUTS, SIGNATURE_KEY, SUBGRAPH_INDEX = 0, 1, 2, 4


class TensorMapF:
    NAME, TENSOR_INDEX = 0, 1
