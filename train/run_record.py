"""train.json: the run's record, each approach's record and the summary table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from artifacts import layout
from artifacts.keras_io import load_model
from edge.contract.catalogue import Catalogue
from edge.contract.schema import LabelSchema
from train.config import TrainConfig, package_versions
from train.data import EVAL_SPLITS, Arrays, eval_dataset
from train.featurecache import FeatureCache
from train.metrics import predict_probs, split_metrics
from train.models import BACKBONE_LAYER
from train.records import (
    Budget,
    CatalogueInfo,
    ComposeInfo,
    DatasetInfo,
    FeatureExtraction,
    TrainRecord,
    TrainVariant,
    WeightsUsed,
)

if TYPE_CHECKING:
    from train.fit import UnitResult


def _run_record(cfg: TrainConfig, weights_used: WeightsUsed, replicas: int, data_info: DatasetInfo,
                data: Mapping[str, Arrays], cache: FeatureCache, variants: dict[str, TrainVariant],
                auto: dict[str, Any] | None = None, catalogue: Catalogue | None = None) -> TrainRecord:
    """train.json: the run's settings, versions, backbone passes and every approach's record; with
    ``--compose auto`` its choice (train/autocompose.py), with a dataset catalogue its size."""
    record = TrainRecord(
        backbone=cfg.backbone,
        image_size=list(cfg.image_size),
        weights=cfg.weights,
        weights_used=weights_used,
        data=str(cfg.data),
        mode="freeze_base" if cfg.freeze_base else ("fine_tune" if cfg.weights != "none" else "scratch"),
        budget=Budget(epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                      warmup_epochs=cfg.warmup_epochs),
        seed=cfg.seed,
        strategy=cfg.strategy,
        replicas=replicas,
        dataset=data_info,
        feature_extraction=FeatureExtraction(
            # Counted where features are cached; the whole-model path runs images every epoch.
            backbone_image_passes=cache.backbone_images if cfg.uses_feature_cache else None,
            images=int(sum(a.n for a in data.values())),
            shared_by_approaches=cfg.uses_feature_cache,
        ),
        versions=package_versions(),
        variants=variants,
        compose=ComposeInfo(mode=cfg.compose, copies=cfg.compose_copies, weight=cfg.compose_weight),
    )
    if auto is not None:
        record["compose"]["auto"] = auto
    if catalogue is not None:
        record["catalogue"] = CatalogueInfo(combinations=len(catalogue.rows), skipped=catalogue.skipped)
    return record


def _approach_record(approach: str, results: Sequence[UnitResult], cfg: TrainConfig, schema: LabelSchema,
                     data: Mapping[str, Arrays], cache: FeatureCache, catalogue: Catalogue | None = None) -> TrainVariant:
    """train.json's record of one approach: its files, costs, times and metrics per evaluation split
    (with the dataset's ``catalogue``, also the joint accuracy decoded among its combinations)."""
    from train.macc import approach_costs

    per_split: dict[str, dict[str, np.ndarray]] = {s: {} for s in EVAL_SPLITS if s in data}
    models = [load_model(r.path) for r in results]
    for m in models:
        m.get_layer(BACKBONE_LAYER).trainable = not cfg.freeze_base
        for split in per_split:
            per_split[split].update(_eval_probs(m, cfg, cache, split, data[split]))
    metrics = {s: split_metrics(schema, schema.head_probs(o), data[s], catalogue) for s, o in per_split.items()}
    costs = approach_costs(models)
    return TrainVariant(
        approach=approach,
        # Train rows that carried each output's label (joint: rows labelled for every head).
        train_n={o: int(data["train"].labelled(o).sum()) for r in results for o in r.unit.outputs},
        files=[layout.model_name(r.unit.name) for r in results],
        params=costs["params"],
        macc=costs["macc"],
        keras_bytes=sum(r.path.stat().st_size for r in results),
        train_wall_s=round(sum(r.train_wall_s for r in results), 3),
        feature_extract_s=round(sum(r.feature_extract_s for r in results), 3),
        epochs=cfg.epochs,
        metrics=metrics,
    )


def _eval_probs(model: Any, cfg: TrainConfig, cache: FeatureCache, split: str, arrays: Arrays) -> dict[str, np.ndarray]:
    """A saved model's softmax outputs on a split; a frozen base reuses the split's cached features.

    The cache is keyed by the backbone's weights fingerprint, so a saved model whose backbone
    differs from the one the features came from is run on the images instead.
    """
    if not cfg.uses_feature_cache:
        return predict_probs(model, arrays.images, cfg.batch_size)
    from train.models import heads_model

    feats, _ = cache.get(model.get_layer(BACKBONE_LAYER), split, arrays.images)
    out = heads_model(model).predict(eval_dataset(feats, None, cfg.batch_size), verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


def summary_table(record: Mapping[str, Any], split: str = "test") -> str:
    """A fixed-width table: one row per variant, per-head accuracy and joint accuracy on ``split``."""
    variants = record.get("variants", {})
    if not variants:
        return "(no variants)"
    heads: list[str] = []
    for v in variants.values():
        for h in v["metrics"].get(split, {}).get("heads", {}):
            if h not in heads:
                heads.append(h)
    cols = ["variant", "params", "MACC(M)", "trained MACC(M)", "KB"] + [f"{h} acc" for h in heads] + [
        "joint acc", "unseen joint", "train s"]
    rows = []
    for name, v in variants.items():
        m = v["metrics"].get(split, {})
        un = v["metrics"].get("test_unseen")
        rows.append([
            name, f"{v['params']['total']:,}", f"{v['macc']['total'] / 1e6:.1f}", f"{v['macc']['trained'] / 1e6:.2f}",
            f"{v['keras_bytes'] / 1024:.0f}",
            *[f"{m.get('heads', {}).get(h, {}).get('accuracy', float('nan')):.3f}" for h in heads],
            f"{m.get('joint_accuracy', float('nan')):.3f}",
            "-" if un is None else f"{un['joint_accuracy']:.3f}",
            f"{v['train_wall_s']:.1f}",
        ])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=False)))  # noqa: E731
    return "\n".join([f"{split} split:", line(cols), line(["-" * w for w in widths]), *map(line, rows)])
