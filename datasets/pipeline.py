"""The data path: a dataset split as labelled arrays whose images are decoded on the fly.

One type, ``Arrays``, is a split at every stage: its labels per head (``UNLABELLED`` where a row
has none), its joint index, its paths, and its ``images``: a ``StreamedImages`` (decoded when
rows are read), a plain uint8 array (tests, small sets such as a conversion's calibration images),
or, on a frozen base, the split's features (N, F) from the feature store.

Decoding uses ``edge.runtime.preprocess.load_image``, the function the edge runtime calls, so training and
the device see the same pixels. Rows are decoded in parallel threads (Pillow releases the GIL while
decoding and resizing) a batch at a time, with the next batches decoded ahead (``iter_batches``):
no split is ever held whole in memory. An image that cannot be decoded is skipped and counted
(``verify`` for a streamed split, ``load_split`` for an in-memory one), and a summary is logged
once; an epoch never stops half-way on a bad file.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.folder import MISSING, SPLITS, Dataset, DatasetError, Record
from edge.contract.schema import JOINT_OUTPUT
from edge.errors import first_line
from edge.runtime.preprocess import load_image

log = logging.getLogger("datasets.pipeline")

UNLABELLED = -1
"""Class index of a head's label in a row not labelled for that head."""

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def decode_workers() -> int:
    """Threads decoding images (``POLYHEAD_DECODE_WORKERS``, default 2 per core, at most 16)."""
    value = os.environ.get("POLYHEAD_DECODE_WORKERS", "")
    return max(1, int(value)) if value.strip().isdigit() else min(16, 2 * (os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    """One shared decoding pool: batches from several pipelines share its threads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=decode_workers(), thread_name_prefix="polyhead-decode")
        return _POOL


def _decode(path: Path, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_image(path, height, width), None
    except Exception as e:  # noqa: BLE001 - any failure of one file is that file's problem, not the run's
        msg = first_line(e, None)
        return None, msg if str(path) in msg else f"{path}: {msg}"


def _rows(index: Any, n: int) -> np.ndarray:
    """Row numbers of an int, slice, int array or bool mask over ``n`` rows."""
    if isinstance(index, slice):
        return np.arange(n)[index]
    index = np.asarray(index)
    if index.dtype == bool:
        return np.flatnonzero(index)
    return np.where(index < 0, index + n, index).astype(np.int64)


class StreamedImages:
    """uint8 images (N, H, W, 3) read from files when their rows are asked for, never all at once.

    Indexes like an array (int, slice, int array, bool mask); ``decode`` also says which rows
    failed. ``subset`` gives another StreamedImages over some rows (no decoding)."""

    def __init__(self, paths: Sequence[Path], height: int, width: int) -> None:
        self.paths = tuple(paths)
        self.height, self.width = int(height), int(width)
        self.shape = (len(self.paths), self.height, self.width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, index: Any) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
        """(images, ok bool per row, (path, error) of each failure): a failed row is zeros."""
        rows = _rows(index, len(self.paths))
        paths = [self.paths[i] for i in rows]
        results = list(_pool().map(lambda p: _decode(p, self.height, self.width), paths))
        out = np.zeros((len(rows), self.height, self.width, 3), np.uint8)
        ok = np.zeros(len(rows), bool)
        errors = []
        for k, (p, (arr, err)) in enumerate(zip(paths, results, strict=True)):
            if err is None:
                out[k], ok[k] = arr, True
            else:
                errors.append((p, err))
        return out, ok, errors

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.decode([int(index)])[0][0]
        return self.decode(index)[0]

    def subset(self, index: Any) -> StreamedImages:
        rows = _rows(index, len(self.paths))
        return StreamedImages([self.paths[i] for i in rows], self.height, self.width)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


class RowSubset:
    """Some rows of a memory-mapped (n, d) array-like (the feature store's ``np.memmap`` or
    ``ShardedRows``), read only when indexed.

    A pair fold's rows, a partially labelled head's or the decoded ones: indexing reads just the
    asked rows from the shards, so a subset of a 10M-row split costs its row numbers, not a copy of
    its features."""

    def __init__(self, base: Any, index: Any) -> None:
        self.base = base
        self.rows = _rows(index, len(base))
        self.shape = (len(self.rows), *(int(d) for d in base.shape[1:]))
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return np.asarray(self.base[int(self.rows[index])])
        return np.asarray(self.base[self.rows[index]])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[slice(None)]
        return out if dtype is None else out.astype(dtype)


def take_rows(x: Any, index: Any) -> Any:
    """Rows of any split array-like without reading them: a StreamedImages stays lazy, a memory-mapped
    one (``np.memmap``, ``ShardedRows``, ``RowSubset``) becomes a ``RowSubset``; only an in-memory
    array is indexed (a copy)."""
    if isinstance(x, StreamedImages):
        return x.subset(index)
    if type(x) is np.ndarray:
        return x[index]
    if isinstance(x, RowSubset):
        return RowSubset(x.base, x.rows[_rows(index, len(x))])
    return RowSubset(x, index)


def iter_batches(x: Any, batch_size: int, ahead: int = 2) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start row, batch, ok per row) of ``x`` in order, the next ``ahead`` batches read while the
    caller works on this one (decoding overlaps the backbone)."""
    n = len(x)

    def read(start: int) -> tuple[int, np.ndarray, np.ndarray]:
        stop = min(n, start + batch_size)
        if isinstance(x, StreamedImages):
            images, ok, _ = x.decode(slice(start, stop))
            return start, images, ok
        return start, np.asarray(x[start:stop]), np.ones(stop - start, bool)

    starts = list(range(0, n, batch_size))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyhead-ahead") as ahead_pool:
        pending = [ahead_pool.submit(read, s) for s in starts[: ahead + 1]]
        for k in range(len(starts)):
            result = pending[k].result()
            pending[k] = None  # type: ignore[call-overload]  # free the batch once handed over
            if k + ahead + 1 < len(starts):
                pending.append(ahead_pool.submit(read, starts[k + ahead + 1]))
            yield result


@dataclass(frozen=True, eq=False)
class Arrays:
    """One split: ``images`` (N, ...) rows, int32 labels per head (``UNLABELLED``: not labelled for
    that head), joint index (-1: combination unseen in train, or not labelled for every head).

    ``images`` is a ``StreamedImages`` (decoded on access), a uint8 (N, H, W, 3) array, or a frozen
    base's features (N, F) (an ``np.memmap`` or ``ShardedRows`` from the feature store)."""

    images: Any
    labels: Mapping[str, np.ndarray]
    joint: np.ndarray
    paths: tuple[Path, ...] = ()
    """The image files of the rows when loaded from a folder (empty for in-memory data)."""
    skipped: tuple[tuple[Path, str], ...] = ()
    """(path, error) for every image that failed to decode; these are not rows."""

    def __len__(self) -> int:
        return self.n

    @property
    def n(self) -> int:
        return int(len(self.joint))

    def labelled(self, output: str) -> np.ndarray:
        """Bool (N,): rows that carry a target for ``output`` (a head, or ``joint``)."""
        return (self.joint if output == JOINT_OUTPUT else self.labels[output]) >= 0

    @property
    def fully_labelled(self) -> np.ndarray:
        """Bool (N,): rows labelled for every head."""
        mask = np.ones(self.n, dtype=bool)
        for v in self.labels.values():
            mask &= v >= 0
        return mask

    @property
    def partially_labelled(self) -> bool:
        """True when some row misses some head's label (training then needs sample weights)."""
        return not bool(self.fully_labelled.all())

    def targets(self, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Integer targets keyed by output name (a head, or ``joint``); an unlabelled row's target
        is 0, a placeholder that ``sample_weights`` gives weight 0."""
        return {o: np.maximum(self.joint if o == JOINT_OUTPUT else self.labels[o], 0).astype(np.int32)
                for o in outputs}

    def sample_weights(self, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """float32 (N,) per output: 1 where the row has the output's label, 0 where it has none.

        Passed to Keras as a dict keyed like the outputs, so each head's loss and (weighted)
        metrics count only its labelled rows."""
        return {o: self.labelled(o).astype(np.float32) for o in outputs}

    def labelled_counts(self) -> dict[str, int]:
        """Rows labelled per head."""
        return {h: int(np.sum(v >= 0)) for h, v in self.labels.items()}

    def subset(self, mask: np.ndarray) -> Arrays:
        """The rows of ``mask`` (bool or indices); streamed images stay streamed."""
        rows = _rows(mask, self.n)
        paths = tuple(self.paths[i] for i in rows) if self.paths else ()
        return Arrays(take_rows(self.images, rows), {k: v[rows] for k, v in self.labels.items()},
                      self.joint[rows], paths, self.skipped)

    def with_images(self, images: Any) -> Arrays:
        """The same rows with other ``images`` (e.g. their features): one row each."""
        if len(images) != self.n:
            raise DatasetError(f"{len(images)} rows of images for a split of {self.n} rows")
        return Arrays(images, self.labels, self.joint, self.paths, self.skipped)


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise DatasetError(f"{name} must be a positive integer. Received: {name}={value!r}")


def encode_labels(ds: Dataset, records: Sequence[Record]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(head -> int32 class indices with ``UNLABELLED`` for an empty cell, joint index) of ``records``."""
    schema = ds.schema
    heads = [schema.head(h) for h in ds.heads]
    encoded = np.array(
        [[UNLABELLED if label == MISSING else head.index(label) for head, label in zip(heads, r.labels, strict=True)]
         for r in records], dtype=np.int32).reshape(len(records), len(ds.heads))
    labels = {head: np.ascontiguousarray(encoded[:, i]) for i, head in enumerate(ds.heads)}
    joint = np.array([schema.joint_index(r.labels) for r in records], dtype=np.int32)
    return labels, joint


def open_split(ds: Dataset, split: str, height: int, width: int) -> Arrays:
    """Every record of ``split`` as Arrays whose images are decoded on access (nothing decoded yet)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'. Known splits: {list(SPLITS)}")
    _check_size(height, width)
    records = ds.split(split)
    labels, joint = encode_labels(ds, records)
    paths = tuple(r.path for r in records)
    return Arrays(StreamedImages(paths, height, width), labels, joint, paths)


def keep_decoded(arrays: Arrays, ok: np.ndarray, errors: Sequence[tuple[Path, str]], split: str,
                 root: Path | str = "") -> Arrays:
    """The rows whose image decoded (``ok``), the others in ``skipped``; one warning names them, and
    a split with rows but none readable is a DatasetError."""
    ok = np.asarray(ok, bool)
    skipped = tuple(errors)
    if skipped:
        log.warning(
            "split %s: skipped %d of %d images that could not be decoded; first: %s",
            split, len(skipped), arrays.n, skipped[0][1],
        )
    if arrays.n and not ok.any():
        raise DatasetError(
            f"{root}: none of the {arrays.n} images of split '{split}' could be decoded; first: {skipped[0][1]}"
        )
    kept = arrays if ok.all() else arrays.subset(ok)
    return Arrays(kept.images, kept.labels, kept.joint, kept.paths, skipped)


def verify(arrays: Arrays, split: str, root: Path | str = "", batch_size: int = 256) -> Arrays:
    """Decode every streamed row once (nothing kept) and drop the rows that fail, as ``load_split`` does."""
    if not isinstance(arrays.images, StreamedImages):
        return arrays
    ok = np.zeros(arrays.n, bool)
    errors: list[tuple[Path, str]] = []
    for start in range(0, arrays.n, batch_size):
        _, good, errs = arrays.images.decode(slice(start, start + batch_size))
        ok[start: start + len(good)] = good
        errors += errs
    return keep_decoded(arrays, ok, errors, split, root)


def load_split(ds: Dataset, split: str, height: int, width: int, workers: int | None = None) -> Arrays:
    """Decode every image of ``split`` into memory (small sets: a conversion's check and calibration
    images), with the edge preprocessing, in parallel.

    Corrupt, truncated, oversized and non-image files are skipped; ``skipped`` lists them and one
    warning summarises them. A split that exists but has no readable image is a DatasetError.
    ``workers`` is accepted for compatibility; decoding uses the shared pool.
    """
    arrays = open_split(ds, split, height, width)
    images, ok, errors = arrays.images.decode(slice(None))
    kept = keep_decoded(arrays.with_images(images), ok, errors, split, ds.root)
    return kept


def open_splits(ds: Dataset, image_size: Sequence[int], splits: Sequence[str]) -> dict[str, Arrays]:
    """{split: streamed Arrays} for the splits of ``splits`` that have rows."""
    h, w = int(image_size[0]), int(image_size[1])
    return {s: open_split(ds, s, h, w) for s in splits if ds.split(s)}
