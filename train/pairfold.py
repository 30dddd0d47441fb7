"""Pair-held-out validation: can the heads name label combinations they never saw together?

The val split holds only combinations seen in train, so it cannot see a model that has learned the
training set's pairings. Here a *pair* is a combination of every head's label (make/type with two
heads, make/type/colour with three). Each fold removes a few whole pairs from train, trains the
heads again on the rest (same recipe, same features) and scores the val rows of the removed pairs
(``unseen``) and of the pairs kept (``seen``). A pair is removed only when each of its labels keeps
another partner in the fold's train rows: a make seen with one type only is never held out, since
no head could then learn that make at all.

Folds are a function of the train labels, the val labels and the seed alone (recorded in
train.json by name), so plain and composed heads are compared on the same folds. Rows not labelled
for every head belong to no pair: they always train, and score as ``seen``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from datasets.pipeline import take_rows
from train.records import PairFoldMetrics, PairFoldRecord, SplitMetrics

log = logging.getLogger(__name__)

PAIRS_PER_FOLD = 8
"""Pairs each fold holds out (the issue's probe: 3 folds x 8 of 104 make/type pairs)."""


def row_pairs(labels: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(combos (n, heads) int64, full (n,) bool): each row's label per head, and whether it has every one."""
    heads = list(labels)
    n = len(next(iter(labels.values()))) if heads else 0
    combos = np.stack([np.asarray(labels[h], dtype=np.int64) for h in heads], axis=1) if heads else np.zeros((n, 0), np.int64)
    return combos, (combos >= 0).all(axis=1) if heads else np.zeros(n, bool)


def make_folds(train_labels: Mapping[str, np.ndarray], val_labels: Mapping[str, np.ndarray] | None = None,
               folds: int = 3, per_fold: int = PAIRS_PER_FOLD, seed: int = 0) -> list[list[tuple[int, ...]]]:
    """Up to ``folds`` disjoint lists of up to ``per_fold`` pairs (class indices in head order) to hold out.

    A pair qualifies when it has train rows, val rows (when ``val_labels`` is given: a pair with
    none cannot be scored) and, once the fold's pairs are gone, each of its labels still has a pair
    in train. Pairs are tried in an order drawn from ``seed``; folds that find no pair are left out."""
    if len(train_labels) < 2:
        return []
    combos, full = row_pairs(train_labels)
    pairs, counts = np.unique(combos[full], axis=0, return_counts=True)
    if val_labels is not None:
        vc, vfull = row_pairs(val_labels)
        in_val = {tuple(p) for p in np.unique(vc[vfull], axis=0)}
        keep = np.array([tuple(p) in in_val for p in pairs], dtype=bool)
    else:
        keep = np.ones(len(pairs), dtype=bool)
    order = np.random.default_rng([int(seed), 0xF01D]).permutation(len(pairs))
    used: set[int] = set()
    out: list[list[tuple[int, ...]]] = []
    for _ in range(int(folds)):
        # Per head and class: how many of the fold's remaining train pairs hold it.
        partners = [dict(zip(*np.unique(pairs[:, j], return_counts=True), strict=True)) for j in range(pairs.shape[1])]
        chosen: list[int] = []
        for i in order:
            if len(chosen) >= per_fold:
                break
            if i in used or not keep[i] or counts[i] == 0:
                continue
            if all(partners[j][pairs[i, j]] >= 2 for j in range(pairs.shape[1])):
                chosen.append(int(i))
                for j in range(pairs.shape[1]):
                    partners[j][pairs[i, j]] -= 1
        if not chosen:
            break
        used.update(chosen)
        out.append([tuple(int(v) for v in pairs[i]) for i in chosen])
    return out


def held_out_rows(labels: Mapping[str, np.ndarray], fold: Sequence[tuple[int, ...]]) -> np.ndarray:
    """Bool (n,): rows whose pair (every head's label) is one of ``fold``'s."""
    combos, full = row_pairs(labels)
    if not fold:
        return np.zeros(len(full), bool)
    held = np.asarray(fold, dtype=np.int64)
    match = (combos[:, None, :] == held[None, :, :]).all(axis=2).any(axis=1)
    return match & full


def fold_record(schema: Any, folds: Sequence[Sequence[tuple[int, ...]]], seed: int) -> PairFoldRecord:
    """train.json's ``pair_folds``: the held-out pairs by name (``make/type``), per fold."""
    names = [[schema.combination_name(tuple(schema.heads[j].classes[c] for j, c in enumerate(p))) for p in fold]
             for fold in folds]
    return PairFoldRecord(folds=len(folds), pairs_per_fold=PAIRS_PER_FOLD, seed=int(seed), held_out=names)


def pooled_metrics(schema: Any, parts: Sequence[tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                   catalogue: Any = None) -> SplitMetrics:
    """One SplitMetrics over the rows of several folds: ``parts`` = [(probs per head, labels per head)]."""
    from train.data import Arrays
    from train.fit import split_metrics

    heads = schema.head_names
    if not parts:
        empty = Arrays(np.zeros((0, 1), np.float32), {h: np.zeros(0, np.int32) for h in heads}, np.zeros(0, np.int32))
        return split_metrics(schema, {h: np.zeros((0, schema.head(h).num_classes)) for h in heads}, empty, catalogue)
    probs = {h: np.concatenate([p[h] for p, _ in parts]) for h in heads}
    labels = {h: np.concatenate([lab[h] for _, lab in parts]).astype(np.int32) for h in heads}
    n = len(labels[heads[0]])
    arrays = Arrays(np.zeros((n, 1), np.float32), labels, np.full(n, -1, np.int32))
    return split_metrics(schema, probs, arrays, catalogue)


def fold_validation(cfg: Any, schema: Any, units: Sequence[tuple[str, ...]], train_feats: Any, train: Any,
                    val_feats: Any, val: Any, folds: Sequence[Sequence[tuple[int, ...]]],
                    catalogue: Any = None) -> PairFoldMetrics:
    """Train fresh heads of every model (``units``: each model's outputs) per fold on the train rows
    outside the fold's pairs and score the val rows: held-out pairs (``unseen``), the rest (``seen``);
    with the dataset's ``catalogue`` (which lists the held-out pairs too), also decoded among it.

    Same recipe as the run's heads (``train.fit.fit_heads``: optimizer, epochs, batch order, compose)."""
    import time

    from train.data import Arrays

    t0 = time.perf_counter()
    unseen_parts = []
    seen_parts = []
    # The features stand in for the images: a fold's subset copies features, not decoded images.
    rows_only = Arrays(np.zeros((train.n, 0), np.float32), train.labels, train.joint)
    for fold in folds:
        keep = ~held_out_rows(train.labels, fold)
        sub = rows_only.subset(keep)
        feats = take_rows(train_feats, keep)  # read per batch: a fold costs its row numbers, not a copy
        probs: dict[str, np.ndarray] = {}
        for outputs in units:
            probs.update(fit_and_predict(cfg, schema, outputs, feats, sub, val_feats))
        held = held_out_rows(val.labels, fold)
        for rows, parts in ((held, unseen_parts), (~held, seen_parts)):
            parts.append(({h: probs[h][rows] for h in schema.head_names},
                          {h: np.asarray(val.labels[h])[rows] for h in schema.head_names}))
    out = PairFoldMetrics(unseen=pooled_metrics(schema, unseen_parts, catalogue),
                          seen=pooled_metrics(schema, seen_parts, catalogue),
                          wall_s=round(time.perf_counter() - t0, 3))
    log.info(f"pair folds: {len(folds)} folds, unseen joint {out['unseen']['joint_accuracy']:.3f}, "
             f"seen joint {out['seen']['joint_accuracy']:.3f} ({out['wall_s']:.1f} s)")
    return out


def fit_and_predict(cfg: Any, schema: Any, outputs: tuple[str, ...], feats: np.ndarray, train: Any,
                     val_feats: Any) -> dict[str, np.ndarray]:
    """Fresh heads for ``outputs`` trained on ``feats`` (rows labelled for one of them); softmax on ``val_feats``."""
    import keras

    from train.data import eval_dataset
    from train.fit import compile_heads, fit_heads, unit_rows
    from train.models import make_head, output_size

    rows = unit_rows(train, outputs)
    if rows is not None:
        feats, train = take_rows(feats, rows), train.subset(rows)
    keras.utils.set_random_seed(int(cfg.seed))
    inp = keras.Input((feats.shape[1],), name="features")
    heads = keras.Model(inp, {o: make_head(o, output_size(schema, o), cfg.seed)(inp) for o in outputs})
    compile_heads(heads, cfg, outputs, train.n)
    fit_heads(heads, cfg, schema, outputs, feats, train, None, None, cfg.epochs)
    out = heads.predict(eval_dataset(val_feats, None, cfg.batch_size), verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


def run_pair_folds(record: dict[str, Any], cfg: Any, schema: Any, data: Mapping[str, Any], cache: Any,
                   base: Any, catalogue: Any = None) -> None:
    """Add the pair folds to a frozen-base run's train.json ``record`` (in place): the held-out
    pairs, and each multihead/separate approach's fold metrics. Nothing without cached features,
    a val split, two heads or ``cfg.pair_folds``."""
    from train.models import model_units

    if base is None or cfg.pair_folds <= 0 or len(schema.head_names) < 2 or data.get("val") is None:
        return
    train, val = data["train"], data["val"]
    folds = make_folds(train.labels, val.labels, cfg.pair_folds, seed=cfg.seed)
    if not folds:
        log.info("pair folds: no pair can be held out (every label needs another train partner)")
        return
    train_feats, _ = cache.get(base, "train", train.images)
    val_feats, _ = cache.get(base, "val", val.images)
    record["pair_folds"] = fold_record(schema, folds, cfg.seed)
    for approach, variant in record["variants"].items():
        if approach == "joint":
            continue
        units = [u.outputs for u in model_units(approach, schema)]
        variant["pair_folds"] = fold_validation(cfg, schema, units, train_feats, train, val_feats, val, folds, catalogue)
