"""Heads that compose: additive feature augmentation for heads trained on a frozen base's features.

With a frozen pretrained base, each head of a multihead (or separate) model still learns the
training set's *pairings*: when every make appears with only about two types, the type head reads
make cues and the make head reads shape cues, and a make/type pair never seen together is named
wrongly (unseen joint 47.5 % against 95 % seen on the default data).

``--compose additive`` changes only the training batches. The train pair means of the features
are fitted as ``c + a_make + b_type`` (one component per class of every head, count-weighted least
squares over the combinations of every head's label), and every batch gets ``copies`` extra rows
per row with one head's component swapped: ``x - b_t + b_t'`` labelled ``(m, t')``. Every head then
sees each of its classes next to every class of the other heads, so it has to read its own
attribute. The deployed model is the same: one Dense softmax per head on the same features.

The augmented set is never materialised: each batch draws its rows from the features (an array or
an ``np.memmap``, row ``i`` = the split's row ``i``) and makes its copies from a generator seeded by
(seed, step), so a resumed run sees the batches an uninterrupted run sees.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.contract.schema import JOINT_OUTPUT

AUTO_CANDIDATES = ("additive", "projected", "projected-residual")
"""What ``auto`` chooses among (with ``none``, the baseline it must beat)."""
log = logging.getLogger(__name__)
NEW_PAIRS_ONLY = {"additive": False, "projected": True, "projected-residual": True}
"""Per mode: whether the copies swap only to combinations no train row holds."""


@dataclass(frozen=True)
class AdditiveComponents:
    """Per head, one feature-space component per class (``c + sum_h a_h[label_h]`` fits the pair means)."""

    components: dict[str, np.ndarray]
    """head -> float32 (classes, d); zero rows for classes no fully labelled train row holds."""
    known: dict[str, np.ndarray]
    """head -> bool (classes,): classes with a fitted component (the ones a swap may use)."""
    pairs: int
    """How many distinct label combinations the fit used."""
    seen: np.ndarray | None = None
    """(pairs, heads) int64: those combinations, one class per head in ``components``' order."""
    residual: np.ndarray | None = None
    """(k, d) float32: the principal directions of what the additive fit leaves in the pair means
    (count-weighted), largest first: pair-specific detail, neither head's attribute."""

    @property
    def swappable(self) -> tuple[str, ...]:
        """Heads with at least two known classes (a swap needs somewhere to go)."""
        return tuple(h for h, k in self.known.items() if int(k.sum()) >= 2)


def compose_applies(mode: str, outputs: Sequence[str]) -> bool:
    """True when ``mode`` composes the heads of a model with ``outputs`` (never the joint model:
    its one softmax over seen combinations cannot name an unseen one whatever its inputs).
    ``auto`` is resolved to one of the others before any head trains (train/autocompose.py)."""
    if mode == "auto":
        raise ValueError("compose=auto must be resolved (train.autocompose.resolve_auto) before training heads")
    return mode != "none" and JOINT_OUTPUT not in outputs


def fit_components(features: Any, labels: Mapping[str, np.ndarray], num_classes: Mapping[str, int],
                   chunk_rows: int = 8192) -> AdditiveComponents:
    """Fit ``c + sum_h a_h[l_h]`` to the mean features of every label combination (rows labelled for
    every head), weighted by each combination's row count; the minimum-norm solution.

    ``features`` (n, d) may be an ``np.memmap``: it is read in chunks of ``chunk_rows`` rows.
    Differences between two classes of a head are what a swap uses; they are determined wherever
    the combinations connect the classes (the gauge the minimum norm picks cancels out)."""
    heads = list(labels)
    n = int(features.shape[0])
    d = int(features.shape[1])
    full = np.ones(n, dtype=bool)
    for h in heads:
        full &= np.asarray(labels[h]) >= 0
    combos = np.stack([np.asarray(labels[h], dtype=np.int64) for h in heads], axis=1) if heads else np.zeros((n, 0))
    uniq, inverse = np.unique(combos[full], axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(uniq), d), dtype=np.float64)
    full_rows = np.flatnonzero(full)
    for start in range(0, len(full_rows), chunk_rows):
        rows = full_rows[start:start + chunk_rows]
        np.add.at(sums, inverse[start:start + chunk_rows], np.asarray(features[rows], dtype=np.float64))
    counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    comps = {h: np.zeros((int(num_classes[h]), d), np.float32) for h in heads}
    known = {h: np.zeros(int(num_classes[h]), bool) for h in heads}
    if len(uniq) == 0:
        return AdditiveComponents(comps, known, 0)
    means = sums / counts[:, None]
    offsets = np.cumsum([0] + [int(num_classes[h]) for h in heads])
    design = np.zeros((len(uniq), 1 + int(offsets[-1])))
    design[:, 0] = 1.0
    for i, h in enumerate(heads):
        design[np.arange(len(uniq)), 1 + offsets[i] + uniq[:, i]] = 1.0
        known[h][np.unique(uniq[:, i])] = True
    w = np.sqrt(counts)[:, None]
    coef, *_ = np.linalg.lstsq(design * w, means * w, rcond=None)
    for i, h in enumerate(heads):
        comps[h] = coef[1 + offsets[i]: 1 + offsets[i + 1]].astype(np.float32)
        comps[h][~known[h]] = 0.0
    _, sv, vt = np.linalg.svd((means - design @ coef) * w, full_matrices=False)
    # Directions: above 1e-3 of the largest, and not rounding error of an exact fit.
    floor = 1e-6 * float(np.linalg.norm(means * w))
    residual = vt[(sv > (sv[0] * 1e-3 if sv.size else 0.0)) & (sv > floor)].astype(np.float32)
    return AdditiveComponents(comps, known, int(len(uniq)), uniq.astype(np.int64), residual)


def _new_pair_candidates(labels: Mapping[str, np.ndarray], comps: AdditiveComponents, head: str, rows: np.ndarray,
                         pool: np.ndarray) -> np.ndarray | None:
    """Bool (rows, pool): for each copy, the classes of ``head`` that make a combination not in train.

    None when the combinations cannot be keyed (no record of them, or too many to number). Rows not
    labelled for every head belong to no combination: every class of the pool is allowed."""
    heads = list(comps.components)
    sizes = [int(comps.components[h].shape[0]) for h in heads]
    if comps.seen is None or len(comps.seen) == 0 or float(np.prod(np.asarray(sizes, np.float64))) >= 2.0 ** 62:
        return None
    strides = np.cumprod([1, *sizes[:-1]]).astype(np.int64)
    seen_keys = np.unique(comps.seen @ strides)
    lab = np.stack([np.asarray(labels[h])[rows].astype(np.int64) for h in heads], axis=1)
    full = (lab >= 0).all(axis=1)
    j = heads.index(head)
    base = np.where(lab >= 0, lab, 0) @ strides - lab[:, j].clip(0) * strides[j]
    keys = base[:, None] + pool[None, :].astype(np.int64) * strides[j]
    return ~np.isin(keys, seen_keys) | ~full[:, None]


def augment_batch(x: np.ndarray, labels: Mapping[str, np.ndarray], comps: AdditiveComponents, copies: int,
                  rng: np.random.Generator, new_pairs_only: bool = False,
                  ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``copies`` swapped copies of every row of a batch: (features, labels per head, valid).

    A copy picks one head at random among those the row is labelled for with a known class, and a
    new class of that head at random among the known others; its features become
    ``x - a_h[old] + a_h[new]`` and its label for that head the new class (the other heads keep
    theirs, an empty cell stays empty). ``valid`` is False for a copy of a row with no such head
    (its features are the row's own; the caller weighs it 0). ``new_pairs_only``: the new class is
    drawn among those that make a combination no train row holds, where there is one (a copy then
    never contradicts a seen pair's own rows)."""
    b = int(x.shape[0])
    heads = list(comps.swappable)
    reps = np.repeat(np.arange(b), copies)
    out_x = np.array(x[reps], dtype=np.float32, copy=True)
    out_labels = {h: np.array(np.asarray(v)[reps], dtype=np.int32, copy=True) for h, v in labels.items()}
    m = len(reps)
    if not heads:
        return out_x, out_labels, np.zeros(m, bool)
    # Which heads each copy may swap: labelled, with a known class.
    can = np.stack([(out_labels[h] >= 0) & comps.known[h][np.maximum(out_labels[h], 0)] for h in heads], axis=1)
    valid = can.any(axis=1)
    # A random eligible head per copy: random keys, ineligible ones pushed below every eligible one.
    keys = rng.random((m, len(heads))) + can
    choice = np.argmax(keys, axis=1)
    for j, h in enumerate(heads):
        rows = np.flatnonzero(valid & (choice == j))
        if len(rows) == 0:
            continue
        pool = np.flatnonzero(comps.known[h])
        old = out_labels[h][rows]
        allowed = _new_pair_candidates(out_labels, comps, h, rows, pool) if new_pairs_only else None
        if allowed is not None:
            allowed &= pool[None, :] != old[:, None]
            # Rows whose every swap lands on a seen pair swap to any other class.
            allowed |= ~allowed.any(axis=1, keepdims=True) & (pool[None, :] != old[:, None])
            new = pool[np.argmax(rng.random(allowed.shape) + allowed, axis=1)]
        else:
            # A uniform class among the known ones other than the old: draw from len(pool) - 1, skip old.
            pos_old = np.searchsorted(pool, old)
            draw = rng.integers(0, len(pool) - 1, size=len(rows))
            new = pool[draw + (draw >= pos_old)]
        out_x[rows] += comps.components[h][new] - comps.components[h][old]
        out_labels[h][rows] = new
    return out_x, out_labels, valid


@dataclass(frozen=True)
class ComposeSettings:
    """How many swapped copies each row gets per batch, and their total loss weight."""

    copies: int = 2
    weight: float = 3.0
    """The copies of a row together weigh ``weight`` against the row's 1 (each ``weight / copies``)."""
    new_pairs_only: bool = False
    """Swap only to combinations no train row holds (``augment_batch``)."""


def _composed_batch(features: Any, idx: np.ndarray, label_arrays: Mapping[str, np.ndarray], outputs: Sequence[str],
                    num_classes: Mapping[str, int], comps: AdditiveComponents, settings: ComposeSettings,
                    rng: np.random.Generator, one_hot: bool) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One step of ``composed_dataset``: rows ``idx`` of ``features`` and their swapped copies, as (x, y, w)."""
    batch_size, d = len(idx), int(features.shape[1])
    # Sorted reads: sequential pages when the features are memory-mapped.
    sort = np.argsort(idx, kind="stable")
    x = np.empty((batch_size, d), np.float32)
    x[sort] = np.asarray(features[idx[sort]], dtype=np.float32)
    lab = {h: v[idx] for h, v in label_arrays.items()}
    scale = {o: np.ones(batch_size, np.float32) for o in outputs}
    if settings.copies > 0:
        ax, alab, valid = augment_batch(x, lab, comps, settings.copies, rng, settings.new_pairs_only)
        copy_weight = float(settings.weight) / settings.copies
        for o in outputs:
            w_copy = np.where(valid, copy_weight, 0.0)
            scale[o] = np.concatenate([scale[o], w_copy]).astype(np.float32)
        x = np.concatenate([x, ax])
        lab = {h: np.concatenate([lab[h], alab[h]]) for h in lab}
    y = {}
    w = {}
    for o in outputs:
        t = np.maximum(lab[o], 0)
        y[o] = np.eye(int(num_classes[o]), dtype=np.float32)[t] if one_hot else t.astype(np.int32)
        w[o] = ((lab[o] >= 0) * scale[o]).astype(np.float32)
    return x, y, w


def composed_dataset(
    features: Any,
    labels: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    num_classes: Mapping[str, int],
    batch_size: int,
    seed: int,
    first_epoch: int,
    last_epoch: int,
    settings: ComposeSettings,
    one_hot: bool = False,
    comps: AdditiveComponents | None = None,
) -> Any:
    """A tf.data pipeline of (x, y, sample weights) batches for epochs ``first_epoch .. last_epoch-1``.

    The rows of each step are ``train.data.epoch_order``'s (the plain heads' batches), followed by
    ``settings.copies`` swapped copies of each. ``labels`` holds every head (the components need
    them all), ``outputs`` the heads this model trains; a row's weight for an output is 0 where it
    has no label for it. ``one_hot``: targets one-hot (label smoothing). ``comps``: the components
    when the caller has fitted them already (else fitted here)."""
    import tensorflow as tf

    from train.data import order_for_epochs, steps_per_epoch

    n = int(features.shape[0])
    d = int(features.shape[1])
    comps = fit_components(features, labels, num_classes) if comps is None else comps
    log.info(f"compose additive: components from {comps.pairs} label combinations; heads swapped: "
             f"{', '.join(comps.swappable) or 'none'}; {settings.copies} copies per row, weight {settings.weight:g}")
    steps = steps_per_epoch(n, batch_size)
    order = order_for_epochs(n, batch_size, seed, first_epoch, last_epoch).reshape(-1, batch_size)
    offset = first_epoch * steps
    label_arrays = {h: np.asarray(v, dtype=np.int32) for h, v in labels.items()}
    rows_per_batch = batch_size * (1 + settings.copies)

    def batches() -> Any:
        for i, idx in enumerate(order):
            rng = np.random.default_rng([int(seed), int(offset + i), 0xC0])
            yield _composed_batch(features, idx, label_arrays, outputs, num_classes, comps, settings, rng, one_hot)

    y_spec = {o: (tf.TensorSpec((rows_per_batch, int(num_classes[o])), tf.float32) if one_hot
                  else tf.TensorSpec((rows_per_batch,), tf.int32)) for o in outputs}
    w_spec = {o: tf.TensorSpec((rows_per_batch,), tf.float32) for o in outputs}
    ds = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec((rows_per_batch, d), tf.float32), y_spec, w_spec))
    return ds.prefetch(2)


def train_components(schema: Any, features: Any, train: Any) -> AdditiveComponents:
    """``fit_components`` on one model's train rows (``train``: a ``train.data.Arrays`` whose labels
    hold every head, row ``i`` = ``features[i]``)."""
    return fit_components(features, train.labels, {h: schema.head(h).num_classes for h in train.labels})


def composed_train_dataset(cfg: Any, schema: Any, outputs: Sequence[str], features: Any, train: Any,
                           first_epoch: int, last_epoch: int, comps: AdditiveComponents | None = None) -> Any:
    """``composed_dataset`` for a run's settings (``cfg``: TrainConfig) and one model's train rows
    (``train``: a ``train.data.Arrays`` whose labels hold every head, row ``i`` = ``features[i]``)."""
    num_classes = {h: schema.head(h).num_classes for h in train.labels}
    return composed_dataset(features, train.labels, outputs, num_classes, cfg.batch_size, cfg.seed, first_epoch,
                            last_epoch, compose_settings(cfg), one_hot=cfg.label_smoothing > 0, comps=comps)


def compose_settings(cfg: Any) -> ComposeSettings:
    """A run's copies (``cfg``: TrainConfig)."""
    return ComposeSettings(cfg.compose_copies, cfg.compose_weight, new_pairs_only=NEW_PAIRS_ONLY.get(cfg.compose, False))
