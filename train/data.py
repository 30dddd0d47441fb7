"""Data for training: a dataset folder as streamed splits, and deterministic batches.

Decoding goes through ``datasets.pipeline`` (which calls ``edge.preprocess.load_image``, the one
preprocessing function shared with the edge), a batch at a time: no split is held in memory. Batching is ours: the order of every epoch is
a function of (seed, epoch) alone, so a resumed run sees exactly the batches an uninterrupted run
would, and the feature cache sees the same order as a full-model fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datasets.pipeline import UNLABELLED, Arrays
from edge.records_train import DatasetInfo
from edge.schema import LabelSchema

__all__ = ["UNLABELLED", "Arrays", "EVAL_SPLITS", "open_arrays", "dataset_info", "epoch_order", "steps_per_epoch",
           "order_for_epochs", "one_hot_targets", "train_dataset", "eval_dataset"]

EVAL_SPLITS = ("val", "test", "test_unseen")


def open_arrays(
    data: str | Path, image_size: tuple[int, int], splits: tuple[str, ...] = ("train",) + EVAL_SPLITS,
    allow_outside_paths: bool = False,
) -> tuple[LabelSchema, dict[str, Arrays], Any]:
    """Open a dataset folder: (schema, {split: Arrays} for splits present, whose images are decoded
    on access, the Dataset). Nothing is decoded here; ``datasets.pipeline.verify`` (or the feature
    store's extraction) finds the images that cannot be decoded.

    ``allow_outside_paths``: accept image paths that are absolute or leave the folder (refused by default)."""
    from datasets.folder import load_dataset
    from datasets.pipeline import open_splits

    ds = load_dataset(data, allow_outside_paths=allow_outside_paths)
    return ds.schema, open_splits(ds, image_size, splits), ds


def dataset_info(data: Mapping[str, Arrays], unlabelled_rows: int) -> DatasetInfo:
    """train.json's ``dataset``: {"skipped", "sizes", "labelled" (split -> head -> rows labelled),
    "unlabelled_rows" (rows with every head empty)} of splits whose undecodable rows are dropped."""
    return DatasetInfo(skipped={s: len(a.skipped) for s, a in data.items()}, sizes={s: a.n for s, a in data.items()},
                       labelled={s: a.labelled_counts() for s, a in data.items()},
                       unlabelled_rows=unlabelled_rows)


def epoch_order(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Indices of one epoch, (steps, batch_size): a permutation from (seed, epoch), the last batch
    filled up from the start of the permutation so every batch is full (a fixed batch shape also
    splits evenly across replicas)."""
    steps = steps_per_epoch(n, batch_size)
    perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    need = steps * batch_size
    if need > n:
        perm = np.concatenate([perm, np.resize(perm, need - n)])
    return perm[:need].reshape(steps, batch_size)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-int(n) // int(batch_size)))


def order_for_epochs(n: int, batch_size: int, seed: int, first_epoch: int, last_epoch: int) -> np.ndarray:
    """Flat indices for epochs ``first_epoch .. last_epoch-1`` (0-based)."""
    if last_epoch <= first_epoch:
        return np.zeros((0,), dtype=np.int64)
    return np.concatenate(
        [epoch_order(n, batch_size, seed, e).reshape(-1) for e in range(first_epoch, last_epoch)]
    ).astype(np.int64)


def one_hot_targets(targets: Mapping[str, np.ndarray], classes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """One-hot float32 targets (label smoothing needs them: Keras' sparse loss has no smoothing)."""
    return {k: np.eye(classes[k], dtype=np.float32)[v] for k, v in targets.items()}


def _in_memory(inputs: Any) -> bool:
    """A plain array becomes one constant tensor; anything else (streamed images, memory-mapped
    features) is read a batch at a time and never held whole."""
    return type(inputs) is np.ndarray


def _row_reader(inputs: Any) -> Any:
    """A TF op reading rows ``idx`` of ``inputs`` (a constant gather, or a numpy call that decodes
    or pages in just those rows)."""
    import tensorflow as tf

    if _in_memory(inputs):
        x_all = tf.constant(inputs)
        return lambda idx: tf.gather(x_all, idx)
    dtype = tf.as_dtype(np.dtype(inputs.dtype))
    shape = tuple(int(d) for d in inputs.shape[1:])

    def read(idx: Any) -> Any:
        x = tf.numpy_function(lambda i: np.ascontiguousarray(inputs[np.asarray(i, np.int64)]), [idx], dtype,
                              stateful=False)
        x.set_shape((None, *shape))
        return x

    return read


def train_dataset(
    inputs: Any,
    targets: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    first_epoch: int,
    last_epoch: int,
    augment: bool = False,
    shard_by_data: bool = False,
    sample_weights: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """A tf.data pipeline of exactly (last_epoch - first_epoch) epochs of full batches.

    ``sample_weights`` (per output, like ``targets``): batches become (x, y, weights), so a head's
    loss and weighted metrics skip the rows without its label.

    ``inputs``: images (N,H,W,3) uint8 (cast to float32 0..255) or features (N,F): an array, a
    ``StreamedImages`` (each batch decoded when needed, several in parallel, prefetched) or a
    memory-mapped feature store.
    ``augment`` (images only): random horizontal flip and brightness, seeded per batch position
    so a resumed run augments the same way.
    """
    import tensorflow as tf

    n = int(inputs.shape[0])
    order = order_for_epochs(n, batch_size, seed, first_epoch, last_epoch)
    read_rows = _row_reader(inputs)
    y_all = {k: tf.constant(v) for k, v in targets.items()}
    w_all = None if sample_weights is None else {k: tf.constant(v) for k, v in sample_weights.items()}
    is_image = len(inputs.shape) == 4
    offset = first_epoch * steps_per_epoch(n, batch_size)

    def gather(step: Any, idx: Any) -> Any:
        x = read_rows(idx)
        x = tf.cast(x, tf.float32)
        if augment and is_image:
            s = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
            x = tf.image.stateless_random_flip_left_right(x, seed=s)
            x = tf.clip_by_value(tf.image.stateless_random_brightness(x, 25.0, seed=s + 1), 0.0, 255.0)
        y = {k: tf.gather(v, idx) for k, v in y_all.items()}
        if w_all is None:
            return x, y
        return x, y, {k: tf.gather(v, idx) for k, v in w_all.items()}

    ds = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    ds = ds.enumerate(start=offset).map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    if shard_by_data:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _batched_inputs(inputs: Any, batch_size: int, drop_remainder: bool) -> Any:
    """Batches of ``inputs`` in row order, as float32 (streamed or memory-mapped rows read per batch)."""
    import tensorflow as tf

    if _in_memory(inputs):
        return tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size, drop_remainder=drop_remainder)
    n = int(inputs.shape[0])
    stop = n - n % batch_size if drop_remainder else n
    read_rows = _row_reader(inputs)
    starts = tf.data.Dataset.range(0, stop, batch_size)
    return starts.map(lambda s: read_rows(tf.range(s, tf.minimum(s + batch_size, stop))),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_dataset(inputs: Any, targets: Mapping[str, np.ndarray] | None, batch_size: int,
                 drop_remainder: bool = False, sample_weights: Mapping[str, np.ndarray] | None = None) -> Any:
    """Batches in order, images cast to float32; with ``targets`` (for Keras' validation) or without;
    with ``sample_weights`` too, batches are (x, y, weights) (a head's unlabelled rows weigh 0).
    ``inputs`` as in ``train_dataset``: streamed and memory-mapped rows are read a batch at a time.

    ``drop_remainder``: for validation under a multi-replica strategy, where a last batch smaller
    than the replica count would leave a replica an empty batch (BatchNorm fails on it).
    """
    import tensorflow as tf

    x = _batched_inputs(inputs, batch_size, drop_remainder).map(lambda a: tf.cast(a, tf.float32))
    if targets is not None and sample_weights is not None:
        ds = tf.data.Dataset.zip((x, tf.data.Dataset.from_tensor_slices(dict(targets)).batch(
            batch_size, drop_remainder=drop_remainder), tf.data.Dataset.from_tensor_slices(dict(sample_weights)).batch(
            batch_size, drop_remainder=drop_remainder)))
    elif targets is not None:
        ds = tf.data.Dataset.zip((x, tf.data.Dataset.from_tensor_slices(dict(targets)).batch(
            batch_size, drop_remainder=drop_remainder)))
    else:
        ds = x
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(2).with_options(options)
