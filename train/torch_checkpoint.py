"""Read a legacy (non-zip) PyTorch checkpoint into numpy arrays, without torch and without trusting it.

``torch.save(..., _use_new_zipfile_serialization=False)`` writes, one after another:

1. three small pickles: a magic number, a protocol version (1001) and system info (endianness, sizes);
2. the object (here a state dict): a pickle whose tensors are ``torch._utils._rebuild_tensor_v2(
   storage, offset, size, stride, requires_grad, hooks)`` calls and whose storages are persistent ids
   ``('storage', torch.FloatStorage, key, location, numel[, view_metadata])``;
3. a pickle of the storage keys, in the order their data follows;
4. per key: an 8-byte little-endian element count, then the raw elements.

Pickle runs code: a ``GLOBAL os system`` followed by ``REDUCE`` calls ``os.system``. The unpickler
here resolves only three kinds of global, each to a harmless stand-in of our own (nothing of torch is
imported or executed): ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` (records the
call's arguments) and ``torch.<Type>Storage`` (a dtype tag). Any other global is refused before
anything is called. Every size read from the file is checked against the bytes that remain, so a
hostile file cannot make the reader allocate more than the file itself holds.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import PolyheadError, first_line

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_CHECKPOINT_BYTES = 1 << 30
"""Refuse larger files: the largest checkpoint we read (EfficientNet-Lite2) is about 25 MB."""

STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(PolyheadError):
    """The checkpoint is unreadable, tampered with or not what it claims (one line naming the file)."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<Type>Storage`` class: only its numpy dtype."""

    name: str
    dtype: str


@dataclass(frozen=True)
class _StorageRef:
    """A persistent id: which storage (by key) a tensor views, of which dtype and length."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """The arguments of a ``_rebuild_tensor_v2`` call, kept until the storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _RebuildTensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validates types and records the call.

    A fresh slot-less instance per lookup, so a pickle's BUILD opcode cannot set attributes on
    anything that outlives the load.
    """

    __slots__ = ()

    def __call__(self, storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
        if not isinstance(storage, _StorageRef):
            raise pickle.UnpicklingError("_rebuild_tensor_v2 got no storage")
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
                and all(type(v) is int for v in (offset, *size, *stride))):
            raise pickle.UnpicklingError("_rebuild_tensor_v2 got a malformed offset, size or stride")
        return _TensorRef(storage, offset, size, stride)


def _allowed_global(module: str, name: str) -> Any:
    """The stand-in for an allowed global, or None."""
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _RebuildTensor()
    if module == "torch" and name in STORAGE_DTYPES:
        return _StorageType(name, STORAGE_DTYPES[name])
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a legacy torch state dict needs (see module doc).

    ``find_class`` is the one gate through which pickle reaches any callable (GLOBAL, STACK_GLOBAL,
    INST, OBJ and the copyreg EXT opcodes all go through it), so refusing here means nothing else
    can be called.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented on the class
        allowed = _allowed_global(module, name)
        if allowed is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        return allowed

    def persistent_load(self, pid: Any) -> _StorageRef:  # noqa: D102 - documented on the class
        if (not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
                or type(pid[4]) is not int or pid[4] < 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        if len(pid) == 6 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        return _StorageRef(pid[2], pid[1].dtype, pid[4])


def restricted_loads(data: bytes | io.BytesIO) -> Any:
    """Unpickle one object from ``data`` through RestrictedUnpickler; raises pickle.UnpicklingError."""
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    return RestrictedUnpickler(stream).load()


def read_legacy_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read a legacy torch state dict as ``{name: float32/int array}`` (safely; see the module doc).

    ``sha256``: when given, the file's bytes must hash to it (checked before any byte is unpickled).
    Raises CheckpointError (one line naming the file) on any problem.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: {size} bytes is larger than any checkpoint polyhead reads")
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise CheckpointError(f"{path}: SHA-256 {got} does not match the recorded {sha256}: "
                                  "the file is damaged or was tampered with; reinstall its package")
    try:
        return _parse(data)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, OverflowError, MemoryError, RecursionError) as e:
        msg = first_line(e, 200)
        raise CheckpointError(f"{path}: not a readable legacy torch checkpoint ({msg})") from None


def _parse(data: bytes) -> dict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if restricted_loads(stream) != LEGACY_MAGIC:
        raise CheckpointError("not a legacy torch checkpoint (bad magic number; zip checkpoints are not supported)")
    if restricted_loads(stream) != LEGACY_PROTOCOL:
        raise CheckpointError("unsupported legacy torch protocol version")
    info = restricted_loads(stream)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise CheckpointError("not a little-endian legacy torch checkpoint")
    state = restricted_loads(stream)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRef)
                                              for k, v in state.items()):
        raise CheckpointError("the checkpoint is not a state dict of tensors")
    keys = restricted_loads(stream)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise CheckpointError("malformed storage key list")
    refs = {t.storage.key: t.storage for t in state.values()}
    if set(refs) != set(keys):
        raise CheckpointError("storage keys do not match the tensors' storages")
    view = memoryview(data)
    pos = stream.tell()
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = refs[key]
        itemsize = np.dtype(ref.dtype).itemsize
        if len(data) - pos < 8:
            raise CheckpointError(f"storage {key} is truncated")
        count = int.from_bytes(data[pos:pos + 8], "little")
        pos += 8
        # Bounded before any allocation: the count must fit in what is left of the file.
        if count != ref.numel or count * itemsize > len(data) - pos:
            raise CheckpointError(f"storage {key} claims {count} elements; the file holds fewer")
        storages[key] = np.frombuffer(view[pos:pos + count * itemsize], dtype=ref.dtype)
        pos += count * itemsize
    if pos != len(data):
        raise CheckpointError(f"{len(data) - pos} unexpected bytes after the last storage")
    return {name: _materialise(name, t, storages[t.storage.key]) for name, t in state.items()}


def _materialise(name: str, t: _TensorRef, storage: np.ndarray) -> np.ndarray:
    """Copy tensor ``t`` out of its storage, proving first that every index lies inside it."""
    if t.offset < 0 or any(s < 0 for s in t.size) or any(st < 0 for st in t.stride):
        raise CheckpointError(f"tensor {name} has a negative offset, size or stride")
    numel = int(np.prod(t.size, dtype=np.int64)) if t.size else 1
    if numel == 0:
        return np.zeros(t.size, dtype=storage.dtype)
    last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride, strict=True))
    # numel <= storage length also bounds the copy (a stride-0 view could otherwise expand anything).
    if last >= storage.size or numel > storage.size:
        raise CheckpointError(f"tensor {name} reaches outside its storage")
    item = storage.itemsize
    out = np.lib.stride_tricks.as_strided(
        storage[t.offset:], shape=t.size, strides=tuple(st * item for st in t.stride), writeable=False
    )
    return np.ascontiguousarray(out).astype(storage.dtype.newbyteorder("="), copy=False)
