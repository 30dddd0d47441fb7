"""The images a conversion needs: the test split (for the check) and calibration images (int8).

Records come from ``datasets.folder.load_dataset``; pixels from ``edge.runtime.preprocess.load_image`` at
the model's input size (through ``datasets.pipeline``), so the check sees exactly what the device
sees. Labels are encoded with the *run's* schema.

The check split streams: it is decoded once to find its unreadable images (nothing kept), then
every consumer (Keras, each .tflite file, tflite-runtime, the device check) reads it again
``CHECK_BATCH`` rows at a time (``check_batches``), so convert's memory does not grow with the
split. Calibration images (at most ``--calibration`` records) are small and stay in memory.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.errors import ConvertError
from convert.runner import CHECK_BATCH
from datasets.pipeline import Arrays, StreamedImages
from edge.contract.schema import LabelSchema, SchemaError

LabelledImages = Arrays
"""The one labelled-arrays type (``datasets.pipeline.Arrays``); the old name stays for importers."""


def open_dataset(root: str | os.PathLike, allow_outside_paths: bool = False) -> Any:
    """The dataset at ``root`` (``datasets.folder.load_dataset``), errors as one-line ConvertError.

    ``allow_outside_paths`` accepts image paths that are absolute or leave the folder (refused by default)."""
    from datasets.folder import DatasetError, load_dataset

    try:
        return load_dataset(root, allow_outside_paths=allow_outside_paths)
    except DatasetError as e:
        raise ConvertError(str(e)) from None


class CheckStream(StreamedImages):
    """The check split's readable images, decoded when their rows are read (``StreamedImages``).

    Every row decoded once when the check began; one that fails later (the file changed meanwhile)
    is a one-line ConvertError, never a row of zeros in the check."""

    def decode(self, index: Any) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
        images, ok, errors = super().decode(index)
        if errors:
            raise ConvertError(f"{errors[0][1]} (it could be read when the check began)")
        return images, ok, errors


def check_batches(images: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, uint8 batch) of ``images`` in order, ``CHECK_BATCH`` rows at a time, the next
    batches decoded while the caller works (``datasets.pipeline.iter_batches``)."""
    from datasets.pipeline import iter_batches

    for start, batch, _ in iter_batches(images, CHECK_BATCH):
        yield start, batch


def load_records(ds: Any, records: tuple[Any, ...], split: str, schema: LabelSchema, size: tuple[int, int],
                 stream: bool = False) -> LabelledImages:
    """Decode ``records`` at ``size`` (h, w) and encode their labels with ``schema``.

    ``stream``: the images are a ``CheckStream`` over the readable rows (each decoded once here,
    a batch at a time, to find the unreadable ones; no pixels kept), else one uint8 array."""
    from datasets.folder import DatasetError
    from datasets.pipeline import load_split, open_split, verify

    h, w = size
    subset = dataclasses.replace(ds, records=tuple(records))
    try:
        if stream:
            arrays = verify(open_split(subset, split, h, w), split, ds.root, batch_size=CHECK_BATCH)
        else:
            arrays = load_split(subset, split, h, w)
    except DatasetError as e:
        raise ConvertError(f"{split} images: {e}") from None
    by_path = {str(r.path): r for r in records}
    paths = [str(p) for p in arrays.paths]
    rows = [by_path[p].labels for p in paths]
    skipped = [(str(p), str(e)) for p, e in arrays.skipped]
    labels: dict[str, np.ndarray] = {}
    for head in schema.heads:
        try:
            # By column name (a run grown by add-head may list its heads in another order than
            # the dataset); an empty cell (not labelled for this head) is -1, left out of its metrics.
            i = ds.heads.index(head.name)
            labels[head.name] = np.array([-1 if row[i] == "" else head.index(row[i]) for row in rows], np.int32)
        except ValueError:
            raise ConvertError(f"{ds.root}: has no column for head '{head.name}' of the run's schema.json") from None
        except SchemaError as e:
            raise ConvertError(f"{ds.root}: {e} (the run's schema.json does not cover this dataset)") from None
    joint = np.array([schema.joint_index(tuple(row[ds.heads.index(h)] for h in schema.head_names)) for row in rows],
                     np.int32)
    images = CheckStream(arrays.paths, h, w) if stream else np.asarray(arrays.images, np.uint8)
    return Arrays(images, labels, joint, tuple(Path(p) for p in paths), tuple(skipped))


def calibration_records(records: tuple[Any, ...], n: int, seed: int = 0) -> tuple[Any, ...]:
    """Up to ``n`` records drawn round-robin over label combinations, so every class is represented.

    Combinations are visited in sorted order; within one, records are shuffled with ``seed``.
    """
    groups: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for r in records:
        groups[tuple(r.labels)].append(r)
    rng = np.random.default_rng(seed)
    queues = []
    for key in sorted(groups):
        g = groups[key]
        queues.append([g[i] for i in rng.permutation(len(g))])
    chosen: list[Any] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return tuple(chosen)


def resolve_data_root(value: str, run_dir: Path) -> Path:
    """The dataset folder named by config.json's ``data``: as given, else relative to the run's parent folders."""
    p = Path(value)
    candidates = [p] if p.is_absolute() else [p, run_dir / p, run_dir.parent / p, run_dir.parent.parent / p]
    for c in candidates:
        if (c / "labels.csv").is_file():
            return c
    raise ConvertError(f"{run_dir}: dataset folder not found (no labels.csv; config.json's data or --data). Received: data={value!r}")


@dataclass
class CheckImages:
    """The dataset's check (test) images, streamed, and calibration (train) images, in memory: each
    opened once per input size."""

    ds: Any
    root: Path
    schema: LabelSchema
    check_split: str
    test_records: tuple[Any, ...]
    calibration_records: tuple[Any, ...]
    warnings: list[str]
    """convert.json's top-level warnings: an unreadable image is named there."""
    _loaded: dict[tuple[str, tuple[int, int]], LabelledImages] = field(default_factory=dict)

    def _load(self, split: str, records: tuple[Any, ...], size: tuple[int, int], stream: bool) -> LabelledImages:
        if (split, size) not in self._loaded:
            self._loaded[(split, size)] = loaded = load_records(self.ds, records, split, self.schema, size, stream)
            self.warnings.extend(f"skipped unreadable image {p}: {err}" for p, err in loaded.skipped)
        return self._loaded[(split, size)]

    def test(self, size: tuple[int, int]) -> LabelledImages:
        """The check split at ``size``: its readable rows, images a ``CheckStream`` (read them with
        ``check_batches``); the unreadable ones are named in ``warnings``."""
        return self._load(self.check_split, self.test_records, size, stream=True)

    def calibration(self, size: tuple[int, int]) -> np.ndarray:
        """Calibration pixels at ``size``; none readable is a one-line ConvertError."""
        images = self._load("train", self.calibration_records, size, stream=False).images
        if len(images) == 0:
            raise ConvertError(f"{self.root}: no readable calibration images in the train split")
        return images
