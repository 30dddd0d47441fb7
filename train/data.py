"""Data for training: a dataset folder decoded into in-memory arrays, and deterministic batches.

Decoding goes through ``datasets.pipeline.load_split`` (which calls ``edge.runtime.preprocess.load_image``,
the one preprocessing function shared with the edge). Batching is ours: the order of every epoch is
a function of (seed, epoch) alone, so a resumed run sees exactly the batches an uninterrupted run
would, and the feature cache sees the same order as a full-model fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract.schema import JOINT_OUTPUT, LabelSchema
from train.records import DatasetInfo

EVAL_SPLITS = ("val", "test", "test_unseen")


UNLABELLED = -1
"""A head's label index in a row not labelled for that head (``datasets.pipeline.UNLABELLED``)."""


@dataclass(frozen=True)
class Arrays:
    """One split in memory: uint8 images (N, H, W, 3), int32 labels per head (-1: not labelled for
    that head), joint index (-1: combination unseen in train, or not labelled for every head)."""

    images: np.ndarray
    labels: Mapping[str, np.ndarray]
    joint: np.ndarray
    paths: tuple[Path, ...] = ()
    """The image files of the rows when loaded from a folder (empty for in-memory data)."""

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

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
        paths = tuple(p for p, keep in zip(self.paths, mask, strict=True) if keep) if self.paths else ()
        return Arrays(self.images[mask], {k: v[mask] for k, v in self.labels.items()}, self.joint[mask], paths)


def load_arrays(
    data: str | Path, image_size: tuple[int, int], splits: tuple[str, ...] = ("train",) + EVAL_SPLITS,
    allow_outside_paths: bool = False,
) -> tuple[LabelSchema, dict[str, Arrays], DatasetInfo]:
    """Load a dataset folder: (schema, {split: Arrays} for splits present, info {"skipped", "sizes",
    "labelled" (split -> head -> rows labelled), "unlabelled_rows" (rows with every head empty)}).

    ``allow_outside_paths``: accept image paths that are absolute or leave the folder (refused by default)."""
    from datasets.folder import load_dataset
    from datasets.pipeline import load_split

    ds = load_dataset(data, allow_outside_paths=allow_outside_paths)
    out: dict[str, Arrays] = {}
    skipped: dict[str, int] = {}
    for split in splits:
        if not ds.split(split):
            continue
        sa = load_split(ds, split, int(image_size[0]), int(image_size[1]))
        out[split] = Arrays(
            np.asarray(sa.images, dtype=np.uint8),
            {h: np.asarray(sa.labels[h], dtype=np.int32) for h in ds.schema.head_names},
            np.asarray(sa.joint, dtype=np.int32),
            tuple(sa.paths),
        )
        skipped[split] = len(sa.skipped)
    return ds.schema, out, DatasetInfo(skipped=skipped, sizes={s: a.n for s, a in out.items()},
                                       labelled={s: a.labelled_counts() for s, a in out.items()},
                                       unlabelled_rows=ds.unlabelled_rows)


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


def train_dataset(
    inputs: np.ndarray,
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

    ``inputs``: images uint8 (N,H,W,3) (cast to float32 0..255) or cached features (N,F).
    ``augment`` (images only): random horizontal flip and brightness, seeded per batch position
    so a resumed run augments the same way.
    """
    import tensorflow as tf

    n = int(inputs.shape[0])
    order = order_for_epochs(n, batch_size, seed, first_epoch, last_epoch)
    x_all = tf.constant(inputs)
    y_all = {k: tf.constant(v) for k, v in targets.items()}
    w_all = None if sample_weights is None else {k: tf.constant(v) for k, v in sample_weights.items()}
    is_image = inputs.ndim == 4
    offset = first_epoch * steps_per_epoch(n, batch_size)

    def gather(step: Any, idx: Any) -> Any:
        x = tf.gather(x_all, idx)
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


def eval_dataset(inputs: np.ndarray, targets: Mapping[str, np.ndarray] | None, batch_size: int,
                 drop_remainder: bool = False, sample_weights: Mapping[str, np.ndarray] | None = None) -> Any:
    """Batches in order, images cast to float32; with ``targets`` (for Keras' validation) or without;
    with ``sample_weights`` too, batches are (x, y, weights) (a head's unlabelled rows weigh 0).

    ``drop_remainder``: for validation under a multi-replica strategy, where a last batch smaller
    than the replica count would leave a replica an empty batch (BatchNorm fails on it).
    """
    import tensorflow as tf

    x = tf.data.Dataset.from_tensor_slices(inputs)
    if targets is not None and sample_weights is not None:
        ds = tf.data.Dataset.zip((x, tf.data.Dataset.from_tensor_slices(dict(targets)),
                                  tf.data.Dataset.from_tensor_slices(dict(sample_weights))))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(lambda a, b, w: (tf.cast(a, tf.float32), b, w))
    elif targets is not None:
        ds = tf.data.Dataset.zip((x, tf.data.Dataset.from_tensor_slices(dict(targets))))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(lambda a, b: (tf.cast(a, tf.float32), b))
    else:
        ds = x.batch(batch_size, drop_remainder=drop_remainder).map(lambda a: tf.cast(a, tf.float32))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(2).with_options(options)
