"""The training input pipeline: a dataset split as decoded arrays, then as a tf.data.Dataset.

Decoding uses ``edge.runtime.preprocess.load_image``, the function the edge runtime calls, so training and
the device see the same pixels. Images are decoded once, in parallel threads (Pillow releases the
GIL while decoding and resizing), into memory: that array *is* the cache, and every epoch after
the first costs no decoding. An image that cannot be decoded is skipped and counted, and a summary
is logged once the split is loaded; an epoch never stops half-way on a bad file.

TensorFlow is imported inside ``make_tf_dataset`` only; ``load_split`` needs numpy and Pillow.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.folder import MISSING, SPLITS, Dataset, DatasetError
from edge.contract.schema import JOINT_OUTPUT, LabelSchema
from edge.errors import first_line
from edge.runtime.preprocess import load_image

log = logging.getLogger("datasets.pipeline")

UNLABELLED = -1
"""Class index of a head's label in a row not labelled for that head."""
TARGETS_DOC = '"heads" (dict of every head), "joint" (the joint index) or a head name'


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """One split decoded: images (N, H, W, 3) uint8, labels per head, joint index, what was skipped."""

    images: np.ndarray
    labels: dict[str, np.ndarray]
    """head name -> int32 (N,) class indices; ``UNLABELLED`` (-1) where a row has no label for the head."""
    joint: np.ndarray
    """int32 (N,) index among the schema's train combinations; -1 for a combination unseen in train
    or a row not labelled for every head."""
    paths: tuple[Path, ...]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(path, error) for every image that failed to decode; these are not in ``images``."""
    split: str = ""
    schema: LabelSchema | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _decode(path: Path, height: int, width: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return load_image(path, height, width), None
    except Exception as e:  # noqa: BLE001 - any failure of one file is that file's problem, not the run's
        msg = first_line(e, None)
        return None, msg if str(path) in msg else f"{path}: {msg}"


def load_split(
    ds: Dataset,
    split: str,
    height: int,
    width: int,
    workers: int | None = None,
) -> SplitArrays:
    """Decode every image of ``split`` to (height, width) with the edge preprocessing, in parallel.

    Corrupt, truncated, oversized and non-image files are skipped; ``skipped`` lists them and one
    warning summarises them. A split that exists but has no readable image is a DatasetError.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split '{split}'. Known splits: {list(SPLITS)}")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise DatasetError(f"{name} must be a positive integer. Received: {name}={value!r}")
    records = ds.split(split)
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda r: _decode(r.path, height, width), records))

    images = np.zeros((len(records), height, width, 3), dtype=np.uint8)
    keep, skipped = [], []
    for r, (arr, err) in zip(records, results, strict=True):
        if err is not None:
            skipped.append((r.path, err))
            continue
        images[len(keep)] = arr
        keep.append(r)
    images = images[: len(keep)]
    if skipped:
        log.warning(
            "split %s: skipped %d of %d images that could not be decoded; first: %s",
            split, len(skipped), len(records), skipped[0][1],
        )
    if records and not keep:
        raise DatasetError(
            f"{ds.root}: none of the {len(records)} images of split '{split}' could be decoded; first: {skipped[0][1]}"
        )
    schema = ds.schema
    heads = [schema.head(h) for h in ds.heads]
    encoded = np.array(
        [[UNLABELLED if label == MISSING else head.index(label) for head, label in zip(heads, r.labels, strict=True)]
         for r in keep], dtype=np.int32).reshape(len(keep), len(ds.heads))
    labels = {head: np.ascontiguousarray(encoded[:, i]) for i, head in enumerate(ds.heads)}
    joint = np.array([schema.joint_index(r.labels) for r in keep], dtype=np.int32)
    return SplitArrays(
        images=images, labels=labels, joint=joint, paths=tuple(r.path for r in keep),
        skipped=skipped, split=split, schema=schema,
    )


def target_labels(arrays: SplitArrays, target: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Labels keyed by model output name for ``target``, and the row mask to keep (or None for all).

    The joint target drops rows whose combination never occurs in train, or that miss a head's
    label (joint index -1): the joint model has no output for them. A head target drops the rows
    not labelled for that head; ``"heads"`` keeps every row, with -1 where a head is unlabelled.
    """
    if target == "heads":
        return dict(arrays.labels), None
    if target == JOINT_OUTPUT:
        keep = arrays.joint >= 0
        return {JOINT_OUTPUT: arrays.joint[keep]}, (None if keep.all() else keep)
    if target in arrays.labels:
        keep = arrays.labels[target] != UNLABELLED
        return {target: arrays.labels[target][keep]}, (None if keep.all() else keep)
    raise DatasetError(f"unknown target '{target}': expected {TARGETS_DOC}. Known heads: {list(arrays.labels)}")


def augment_batch(images: Any, seed: Any, crop_min: float = 0.8, brightness: float = 0.1,
                  contrast: float = 0.15) -> Any:
    """Random flip, crop-and-resize, brightness and contrast on a float32 0..255 batch (TF ops).

    ``seed`` is a shape-[2] int tensor; stateless ops make an epoch's augmentation reproducible.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seeds[0]) < 0.5
    images = tf.where(flip, tf.reverse(images, axis=[2]), images)
    # Crop a random box covering crop_min..1 of each side, resized back to the input size.
    size = tf.random.stateless_uniform([n, 2], seeds[1], minval=crop_min, maxval=1.0)
    offset = tf.random.stateless_uniform([n, 2], seeds[2]) * (1.0 - size)
    boxes = tf.concat([offset, offset + size], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(n), tf.stack([h, w]), method="bilinear")
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    c = tf.random.stateless_uniform([n, 1, 1, 1], seeds[3], minval=1.0 - contrast, maxval=1.0 + contrast)
    b = tf.random.stateless_uniform([n, 1, 1, 1], seeds[4], minval=-brightness, maxval=brightness) * 255.0
    images = (images - mean) * c + mean + b
    return tf.clip_by_value(images, 0.0, 255.0)


def make_tf_dataset(
    source: SplitArrays | Dataset,
    split: str | None = None,
    height: int | None = None,
    width: int | None = None,
    *,
    batch_size: int = 32,
    target: str = "heads",
    augment: bool = False,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    workers: int | None = None,
) -> Any:
    """A batched tf.data.Dataset of (float32 images 0..255, labels dict keyed by output name).

    ``source`` is a SplitArrays from ``load_split``, or a Dataset (then ``split``, ``height`` and
    ``width`` are required and the split is decoded first). ``target`` picks the labels:
    ``"heads"`` gives ``{head: int32}`` for every head, ``"joint"`` gives ``{"joint": int32}``
    (rows of combinations unseen in train are dropped), a head name gives ``{head: int32}``.
    ``shuffle`` reshuffles every epoch; ``augment`` applies ``augment_batch``. Both follow ``seed``.
    """
    import tensorflow as tf

    if isinstance(source, Dataset):
        if split is None or height is None or width is None:
            raise DatasetError("make_tf_dataset(Dataset, ...) needs split, height and width")
        arrays = load_split(source, split, height, width, workers=workers)
    elif isinstance(source, SplitArrays):
        arrays = source
    else:
        raise DatasetError(f"make_tf_dataset needs a SplitArrays or a Dataset. Received: {type(source).__name__}")
    if batch_size < 1:
        raise DatasetError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    labels, keep = target_labels(arrays, target)
    images = arrays.images if keep is None else arrays.images[keep]
    n = int(images.shape[0])

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle and n > 1:
        data = data.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)

    if augment:
        # One stateless seed per batch from a seeded random stream: reproducible, and different
        # in every epoch because the stream continues across epochs.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        data = tf.data.Dataset.zip((data, seeds)).map(
            lambda batch, s: (augment_batch(tf.cast(batch[0], tf.float32), s), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)
