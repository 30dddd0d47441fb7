"""Evaluation: per-head and joint metrics of a split, and a model's softmax outputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edge.contract.catalogue import Catalogue
from edge.contract.schema import LabelSchema, all_heads_right
from train.data import Arrays, eval_dataset
from train.models import output_names
from train.records import HeadMetrics, SplitMetrics


def head_metrics(probs: np.ndarray, labels: np.ndarray) -> HeadMetrics:
    """Accuracy, mean cross-entropy and top-5 (top-min(5, K)) of one head over its *labelled* rows
    (label >= 0), and ``n``, how many those are."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels >= 0
    probs, labels = probs[keep], labels[keep]
    if len(labels) == 0:
        return HeadMetrics(accuracy=0.0, loss=0.0, top5=0.0, n=0)
    p_true = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    k = min(5, probs.shape[1])
    topk = np.argsort(-probs, axis=1)[:, :k]
    return HeadMetrics(
        accuracy=float(np.mean(np.argmax(probs, axis=1) == labels)),
        loss=float(np.mean(-np.log(p_true))),
        top5=float(np.mean(np.any(topk == labels[:, None], axis=1))),
        n=int(len(labels)),
    )


def split_metrics(schema: LabelSchema, probs_by_head: Mapping[str, np.ndarray], arrays: Arrays,
                  catalogue: Catalogue | None = None) -> SplitMetrics:
    """The contract's per-split record: n, per-head metrics (each over the rows labelled for that
    head, its ``n`` recorded), joint accuracy (every head right) over the rows labelled for every
    head (``n_all_labelled``); with a ``catalogue``, also ``joint_accuracy_catalogue``: the same
    rows, the joint answer decoded among the catalogue's combinations."""
    heads = {h: head_metrics(probs_by_head[h], arrays.labels[h]) for h in schema.head_names}
    full = arrays.fully_labelled
    all_right = full & all_heads_right(probs_by_head, arrays.labels, schema.head_names)
    n_full = int(full.sum())
    out = SplitMetrics(n=arrays.n, heads=heads, n_all_labelled=n_full,
                       joint_accuracy=float(all_right.sum() / n_full) if n_full else 0.0)
    if catalogue is not None:
        decoded = catalogue.decode(probs_by_head)
        right = full.copy()
        for h in catalogue.heads:
            right &= decoded[h] == np.asarray(arrays.labels[h])
        out["joint_accuracy_catalogue"] = float(right.sum() / n_full) if n_full else 0.0
    return out


def predict_probs(model: Any, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Softmax outputs of a polyhead model on uint8 images, keyed by output name."""
    out = model.predict(eval_dataset(images, None, batch_size), verbose=0)
    if not isinstance(out, dict):
        out = dict(zip(output_names(model), out if isinstance(out, (list, tuple)) else [out], strict=False))
    return {k: np.asarray(v) for k, v in out.items()}
