"""``--compose auto``: the composition a run uses, chosen on its own pair-held-out folds.

Which composition pays depends on the data. On the default set, keeping each head's kernel off the
other heads' components and off the pair-specific residual (``projected-residual``) names the
most unseen pairs; on a set whose attributes never vary independently in train (colour and badge
both fixed by the make), the same projection removes part of a head's own signal and loses seen
pairs, and plain ``additive`` copies are the safe choice. ``auto`` decides per run, from the
measurement the issue asks every choice to use: the pair-held-out folds (train/pairfold.py).

Before any model trains, the multihead heads are trained on each fold (train minus the fold's whole
pairs) once per candidate (``none`` and ``train.compose.AUTO_CANDIDATES``), on the cached features,
and scored on the val split: joint accuracy on the held-out pairs and on the seen ones, decoded
among the dataset's catalogue when it has one (that is how its answers are read), each head's top
class otherwise. The choice is the candidate with the best held-out joint among those that lose at
most ``SEEN_LOSS`` of plain heads' seen-pair joint, and only if it beats plain heads on held-out
pairs; else ``none``. test and test_unseen are never looked at. The folds and the head trainings
are seeded like the run's, so a resumed run makes the same choice. Cost: 12 head trainings on the
cached features (about a minute for the default run on 2 cores), before the run's own.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

from train.compose import AUTO_CANDIDATES

log = logging.getLogger(__name__)

SEEN_LOSS = 0.01
"""A candidate may lose at most this fraction (1 point) of plain heads' fold seen-pair joint
accuracy (the issue allows 1.5; the margin covers the folds' own noise)."""

FOLDS = 3
"""Folds drawn when the run's own ``pair_folds`` is 0 (its validation off, the choice still needs some)."""


def score_key(catalogue: Any) -> str:
    """The joint figure the choice reads: decoded among the catalogue when there is one."""
    return "joint_accuracy_catalogue" if catalogue is not None else "joint_accuracy"


def choose(scores: Mapping[str, Mapping[str, float]]) -> str:
    """The mode ``auto`` picks from per-mode {"unseen", "seen"} fold joint accuracies (with ``none``)."""
    plain = scores["none"]
    allowed = [m for m in AUTO_CANDIDATES if m in scores and scores[m]["seen"] >= plain["seen"] - SEEN_LOSS]
    best = max(allowed, key=lambda m: scores[m]["unseen"], default="none")
    return best if best != "none" and scores[best]["unseen"] > plain["unseen"] else "none"


def fold_scores(cfg: Any, schema: Any, train_feats: Any, train: Any, val_feats: Any, val: Any,
                catalogue: Any = None) -> dict[str, dict[str, float]] | None:
    """Per mode (``none`` and every candidate): the multihead heads' fold joint accuracy on held-out
    and on seen pairs; None when no fold can be drawn (fewer than two heads, no pair to hold out)."""
    from train.pairfold import fold_validation, make_folds

    if len(schema.head_names) < 2:
        return None
    folds = make_folds(train.labels, val.labels, cfg.pair_folds or FOLDS, seed=cfg.seed)
    if not folds:
        return None
    key = score_key(catalogue)
    out = {}
    for mode in ("none", *AUTO_CANDIDATES):
        m = fold_validation(dataclasses.replace(cfg, compose=mode), schema, [schema.head_names], train_feats, train,
                            val_feats, val, folds, catalogue)
        out[mode] = {"unseen": round(float(m["unseen"][key]), 4), "seen": round(float(m["seen"][key]), 4)}
    return out


def resolve_auto(cfg: Any, schema: Any, data: Mapping[str, Any], cache: Any, base: Any,
                 catalogue: Any = None) -> tuple[Any, dict[str, Any] | None]:
    """(``cfg`` with ``compose`` resolved, train.json's ``compose.auto`` record or None).

    ``auto`` becomes ``none`` without cached frozen-base features (``base`` None: another protocol,
    or a worker other than the chief), without a val split or without a fold to hold out."""
    if cfg.compose != "auto":
        return cfg, None
    t0 = time.perf_counter()
    val = data.get("val")
    scores = None
    if base is not None and cfg.uses_feature_cache and val is not None and val.n:
        train_feats, _ = cache.get(base, "train", data["train"].images)
        val_feats, _ = cache.get(base, "val", val.images)
        scores = fold_scores(cfg, schema, train_feats, data["train"], val_feats, val, catalogue)
    chosen = choose(scores) if scores else "none"
    decode = "catalogue" if catalogue is not None else "heads"
    if scores:
        log.info("compose auto: fold joint %% held-out / seen pairs (%s decode): %s -> %s", decode,
                 ", ".join(f"{m} {100 * s['unseen']:.1f} / {100 * s['seen']:.1f}" for m, s in scores.items()), chosen)
    else:
        log.info("compose auto: no pair-held-out fold here (a frozen base, a val split and two heads are needed) -> none")
    record = {"chosen": chosen, "decode": decode, "seen_loss_allowed": SEEN_LOSS, "folds": scores or {},
              "wall_s": round(time.perf_counter() - t0, 3)}
    return dataclasses.replace(cfg, compose=chosen), record
