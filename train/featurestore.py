"""The frozen-base feature store: each split's pooled features in shards of ``.npy`` files.

**The interface head training builds on** (add-head and the feature-space composition work read
the same store): per split, head training receives

- ``features``: a 2-D float32 array-like of shape (n, d), in the split's row order. It is an
  ``np.memmap`` when the split fits one shard, else a ``ShardedRows`` (indexes, slices and
  ``np.asarray``-converts like an array, reads only the rows asked for); a subset of its rows is
  ``datasets.pipeline.take_rows(features, rows)``, a ``RowSubset`` that reads the same way (never
  ``features[rows]``, which copies them);
- that split's labels per head: int32 (n,) arrays, ``UNLABELLED`` (-1) where a row has no label for
  the head (``datasets.pipeline.Arrays.labels``; the same row order as ``features``).

Nothing here holds a split's features in memory: shards are memory-mapped, so head training on
10M images costs the page cache, not the heap.

Layout, in the run folder (``runs/<name>/features/``, where the single-file store lived)::

    features/<fingerprint[:16]>/<split>/00000.npy        float32 (rows, d): the features
    features/<fingerprint[:16]>/<split>/00000.ok.npy     bool (rows,): the image decoded
    features/<fingerprint[:16]>/<split>/00000.keys.npy   S32 (rows,): sha256 of the image's bytes
    features/<fingerprint[:16]>/store.json               fingerprint, dim, shard_rows

Shard ``i`` of a split holds its rows ``i * shard_rows .. (i + 1) * shard_rows - 1``. A shard is
finished once its features file exists: the ``ok`` and ``keys`` files are written first, the
features file last, each atomically (temporary file, then ``os.replace``). So an interrupted
extraction resumes at the first unfinished shard, and several workers can each write their own
shards into one shared folder. An image that cannot be decoded is a zero row with ``ok`` False:
row numbers never shift, and the reader drops such rows.

The store is keyed by the backbone's weights fingerprint (features of another base are never
mixed in); ``keys`` lets add-head find an image's features by its bytes (a dataset merged with
``--copy`` has new paths, same bytes). Loading uses ``allow_pickle=False``: plain arrays only.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from artifacts import layout
from edge.io import atomic_write_json

STORE_DIR = layout.FEATURES
DEFAULT_SHARD_ROWS = 4096
"""Rows per shard: 20 MB of 1280-wide float32 features; 2,500 files per 10M images."""
log = logging.getLogger(__name__)


class ShardedRows:
    """Rows of several same-width 2-D arrays (memory-mapped shards) seen as one (n, d) array.

    Supports ``len``, ``shape``, ``dtype``, ``ndim``, integer, slice, integer-array and bool-mask
    indexing (a copy of just those rows) and ``np.asarray`` (a copy of every row)."""

    def __init__(self, parts: Sequence[np.ndarray], dim: int | None = None) -> None:
        self.parts = list(parts)
        width = dim if dim is not None else (self.parts[0].shape[1] if self.parts else 0)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]), int(width))
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            i = int(index) + (self.shape[0] if index < 0 else 0)
            part = int(np.searchsorted(self.starts, i, side="right")) - 1
            return np.asarray(self.parts[part][i - self.starts[part]])
        if isinstance(index, slice):
            index = np.arange(self.shape[0])[index]
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + self.shape[0], index).astype(np.int64)
        out = np.empty((len(index), self.shape[1]), np.float32)
        part = np.searchsorted(self.starts, index, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.parts[p][index[sel] - self.starts[p]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(self.shape[0])]
        return out if dtype is None else out.astype(dtype)


def _write_npy(path: Path, array: np.ndarray) -> None:
    """Save one array atomically (a reader never sees half a shard)."""
    # Host and pid in the temporary name: workers on several hosts share the folder.
    tmp = path.parent / f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


class FeatureStore:
    """One backbone's features in a run folder, split by split, shard by shard (module docstring)."""

    def __init__(self, run_dir: str | os.PathLike, fingerprint: str, shard_rows: int = DEFAULT_SHARD_ROWS) -> None:
        self.run_dir = Path(run_dir)
        self.fingerprint = fingerprint
        self.root = self.run_dir / STORE_DIR / fingerprint[:16]
        meta = self._meta()
        # An existing store keeps its shard size: resuming with another default must not misalign rows.
        self.shard_rows = int(meta.get("shard_rows", shard_rows)) if meta.get("fingerprint") == fingerprint else shard_rows
        if self.shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1. Received: shard_rows={self.shard_rows}")

    def _meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "store.json").read_text())
        except (OSError, ValueError):
            return {}

    def split_dir(self, split: str) -> Path:
        return self.root / split

    def num_shards(self, rows: int) -> int:
        return -(-int(rows) // self.shard_rows)

    def shard_range(self, shard: int, rows: int) -> tuple[int, int]:
        """The split rows [start, stop) that shard ``shard`` holds."""
        start = shard * self.shard_rows
        return start, min(rows, start + self.shard_rows)

    def _paths(self, split: str, shard: int) -> tuple[Path, Path, Path]:
        d = self.split_dir(split)
        return d / f"{shard:05d}.npy", d / f"{shard:05d}.ok.npy", d / f"{shard:05d}.keys.npy"

    def prepare_split(self, split: str, rows: int) -> None:
        """Record the split's row count; shards of a split that had another count (the dataset
        changed under the run) are removed, with one line saying so, and computed again."""
        d = self.split_dir(split)
        marker = d / "rows.json"
        try:
            known = int(json.loads(marker.read_text())["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            known = None
        if known == rows:
            return
        if known is not None or any(d.glob("*.npy")):
            log.info(f"{d}: stored for {known} rows, the split has {rows}: computing its features again")
            for f in d.glob("*.npy"):
                f.unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write_json(marker, {"rows": int(rows)})
        except FileExistsError:  # pragma: no cover - another worker wrote the same count
            pass

    def has_shard(self, split: str, shard: int) -> bool:
        return self._paths(split, shard)[0].is_file()

    def missing_shards(self, split: str, rows: int) -> list[int]:
        """The unfinished shards of a split of ``rows`` rows, in order."""
        return [i for i in range(self.num_shards(rows)) if not self.has_shard(split, i)]

    def write_shard(self, split: str, shard: int, features: np.ndarray, ok: np.ndarray,
                    keys: Sequence[str] | None = None) -> None:
        """Save one finished shard (features last: its presence marks the shard done)."""
        feats_path, ok_path, keys_path = self._paths(split, shard)
        feats_path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.root / "store.json").is_file():
            atomic_write_json(self.root / "store.json", {"fingerprint": self.fingerprint,
                                                         "dim": int(features.shape[1]),
                                                         "shard_rows": self.shard_rows})
        _write_npy(ok_path, np.asarray(ok, bool))
        # ASCII hex in 32 bytes a row (a unicode U32 array would take 128).
        _write_npy(keys_path, np.asarray([k.encode("ascii") for k in keys] if keys is not None else [b""] * len(ok),
                                         dtype="S32"))
        _write_npy(feats_path, np.ascontiguousarray(features, np.float32))

    def read_split(self, split: str, rows: int) -> tuple[Any, np.ndarray]:
        """(features (rows, d) array-like, ok bool (rows,)) of a finished split; memory-mapped.

        Raises FileNotFoundError if a shard is missing, ValueError if one does not fit."""
        parts, oks = [], []
        for i in range(self.num_shards(rows)):
            feats_path, ok_path, _ = self._paths(split, i)
            start, stop = self.shard_range(i, rows)
            f = np.load(feats_path, mmap_mode="r", allow_pickle=False)
            ok = np.load(ok_path, allow_pickle=False)
            if f.ndim != 2 or len(f) != stop - start or len(ok) != len(f) or f.dtype != np.float32:
                raise ValueError(f"{feats_path}: shape {f.shape} {f.dtype}, expected ({stop - start}, d) float32")
            parts.append(f)
            oks.append(ok)
        if not parts:
            return np.zeros((0, int(self._meta().get("dim", 0))), np.float32), np.zeros((0,), bool)
        features = parts[0] if len(parts) == 1 else ShardedRows(parts)
        return features, np.concatenate(oks)

    def keyed(self) -> dict[str, np.ndarray]:
        """{image key: features row} over every finished shard of every split that has keys (add-head)."""
        out: dict[str, np.ndarray] = {}
        if not self.root.is_dir():
            return out
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for feats_path in sorted(d.glob("[0-9][0-9][0-9][0-9][0-9].npy")):
                try:
                    f = np.load(feats_path, mmap_mode="r", allow_pickle=False)
                    ok = np.load(feats_path.with_suffix(".ok.npy"), allow_pickle=False)
                    keys = np.load(feats_path.with_suffix(".keys.npy"), allow_pickle=False)
                except (OSError, ValueError):
                    continue  # a cache: an unreadable shard is computed again
                if f.ndim != 2 or len(keys) != len(f) or len(ok) != len(f):
                    continue
                for k, good, i in zip(keys, ok, range(len(f)), strict=True):
                    if good and k:
                        out[k.decode("ascii") if isinstance(k, bytes) else str(k)] = f[i]
        return out


def legacy_store_path(run_dir: str | os.PathLike, fingerprint: str) -> Path:
    """Where the single-file store of older runs lived (``features/<fingerprint[:16]>.npz``)."""
    return Path(run_dir) / STORE_DIR / f"{fingerprint[:16]}.npz"
