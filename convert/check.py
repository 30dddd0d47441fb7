"""The parity check of a converted file against its Keras original, per head.

Figures are fractions (0..1): ``accuracy`` of the file and ``keras_accuracy`` of the Keras model
on the same images, ``drop`` = keras_accuracy - accuracy (positive: the file is worse),
``agreement`` = share of images whose top-1 class is the same, ``max_prob_diff`` = largest
absolute difference of any class probability.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from convert.records import CheckRecord, HeadCheck
from convert.specs import INT8_MAX_DROP, resolve_precision
from edge.contract.schema import all_heads_right


def head_metrics(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray) -> HeadCheck:
    """Accuracy, Keras accuracy, drop, top-1 agreement and max probability difference of one head.

    Rows without a label for the head (label -1) are left out of the accuracies, kept in the
    agreement with Keras (which needs no label)."""
    labelled = labels >= 0
    n = len(labels)
    if n == 0:
        return HeadCheck(accuracy=None, keras_accuracy=None, drop=None, agreement=None, max_prob_diff=None)
    pred, kpred = probs.argmax(-1), keras_probs.argmax(-1)
    if labelled.any():
        acc = float(np.mean(pred[labelled] == labels[labelled]))
        kacc = float(np.mean(kpred[labelled] == labels[labelled]))
    else:
        acc = kacc = 0.0
    return HeadCheck(
        accuracy=round(acc, 6),
        keras_accuracy=round(kacc, 6),
        drop=round(kacc - acc, 6),
        agreement=round(float(np.mean(pred == kpred)), 6),
        disagreements=int(np.sum(pred != kpred)),
        max_prob_diff=round(float(np.max(np.abs(probs - keras_probs))), 6),
    )


def check_heads(
    probs: dict[str, np.ndarray],
    keras_probs: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    all_heads: tuple[str, ...],
) -> CheckRecord:
    """The check block of convert.json for the heads in ``probs``.

    Joint accuracy (every head right at once) is given when ``probs`` covers ``all_heads``; a
    single ``separate`` file has ``null`` there and its variant entry carries the figure.
    """
    heads = [h for h in all_heads if h in probs]
    n = len(labels[heads[0]]) if heads else 0
    out = CheckRecord(
        n=n,
        heads={h: head_metrics(probs[h], keras_probs[h], labels[h]) for h in heads},
        joint_accuracy=None,
        keras_joint_accuracy=None,
    )
    if set(heads) == set(all_heads) and n:
        # Joint accuracy counts the rows labelled for every head.
        full = np.all([np.asarray(labels[h]) >= 0 for h in heads], axis=0)
        n_full = max(int(full.sum()), 1)
        out["joint_accuracy"] = round(float(all_heads_right(probs, labels, heads)[full].sum() / n_full), 6)
        out["keras_joint_accuracy"] = round(float(all_heads_right(keras_probs, labels, heads)[full].sum() / n_full), 6)
    return out


def verdict(name: str, precision: str, check: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one checked file or variant.

    A file fails when a head's agreement is under its precision's ``min_agreement`` - allowing one
    image for test sets too small to express the bound (under 200 images for float32). A quantised
    head (``warn_on_drop``) that loses more than ``INT8_MAX_DROP`` accuracy is a warning.
    """
    spec = resolve_precision(precision)
    errors: list[str] = []
    warnings: list[str] = []
    n = check.get("n") or 0
    if n == 0:
        warnings.append(f"{name}: not checked (no test images)")
        return errors, warnings
    for head, m in check["heads"].items():
        bound = spec.min_agreement
        if bound is not None:
            allowed = max(1, int(np.floor((1.0 - bound) * n + 1e-9)))
            if m["disagreements"] > allowed:
                errors.append(
                    f"{name}: head '{head}' agrees with Keras on {m['agreement']:.2%} of {n} images "
                    f"(needs >= {bound:.1%}, at most {allowed} disagreeing)"
                )
        if spec.warn_on_drop and m["drop"] is not None and m["drop"] > INT8_MAX_DROP:
            warnings.append(
                f"{name}: {precision} head '{head}' accuracy drops {m['drop'] * 100:.1f} points "
                f"({m['keras_accuracy']:.2%} -> {m['accuracy']:.2%}, > {INT8_MAX_DROP * 100:.0f} points)"
            )
    return errors, warnings
