"""train.json as TypedDicts: what train/fit.py (a training run) and train/add_head.py (a grown run) write.

``train_key_errors`` lists every key a train.json misses or has in excess; the tests hold every
train.json they write to it. Standard library only, like convert.records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from edge.io import key_errors


class HeadMetrics(TypedDict):
    """One head on one split, over the rows labelled for it: fractions 0..1."""

    accuracy: float
    loss: float
    """Mean cross-entropy of the true class (natural log)."""
    top5: float
    """Top-min(5, classes) accuracy."""
    n: int
    """Rows labelled for this head."""


class _SplitMetricsRequired(TypedDict):

    n: int
    """Rows in the split."""
    heads: dict[str, HeadMetrics]
    n_all_labelled: int
    """Rows labelled for every head: the ones ``joint_accuracy`` counts."""
    joint_accuracy: float
    """Fraction of those rows with every head right."""


class SplitMetrics(_SplitMetricsRequired, total=False):
    """One approach on one evaluation split (``val``, ``test``, ``test_unseen``); 0.0 where no row counts."""

    joint_accuracy_catalogue: float
    """With a dataset catalogue (edge/contract/catalogue.py): the same rows, the joint answer the
    listed combination with the highest summed log-probability."""


class ParamCounts(TypedDict):
    total: int
    trainable: int


class MaccCounts(TypedDict):
    """Multiply-accumulates for one image (train.macc): all layers, and the layers training updates."""

    total: int
    trained: int


class _TrainVariantRequired(TypedDict):
    approach: str
    train_n: dict[str, int]
    """Per model output, the train rows labelled for it (``joint``: rows labelled for every head)."""
    files: list[str]
    params: ParamCounts
    macc: MaccCounts
    keras_bytes: int
    train_wall_s: float
    feature_extract_s: float
    epochs: int
    metrics: dict[str, SplitMetrics]


class PairFoldMetrics(TypedDict):
    """Pair-held-out validation of one approach (train.pairfold), pooled over the folds' val rows."""

    unseen: SplitMetrics
    """Val rows of the pairs each fold held out of train."""
    seen: SplitMetrics
    """Val rows of the pairs each fold kept (a row counts once per fold)."""
    wall_s: float
    """Seconds the folds' head training and scoring took."""


class TrainVariant(_TrainVariantRequired, total=False):
    """One approach (keyed by it in ``variants``); ``separate`` sums params, MACC, bytes and seconds over its files."""

    added_s: float
    """add-head only: seconds this approach took to grow (its ``train_wall_s`` includes the parent's)."""
    pair_folds: PairFoldMetrics
    """Frozen-base runs with pair folds, multihead and separate only (joint cannot name an unseen pair)."""


class WeightsUsed(TypedDict):
    """The weights a run started from: ``file`` and its ``sha256`` are None without a file (``none``)."""

    weights: str
    file: str | None
    sha256: str | None


class Budget(TypedDict):
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_epochs: int


class FeatureExtraction(TypedDict):
    backbone_image_passes: int | None
    """Images run through a backbone while features were cached (None: the whole-model path)."""
    images: int
    """Images the run loaded, every split."""
    shared_by_approaches: bool


class DatasetInfo(TypedDict, total=False):
    """What the dataset folder held (train.data.dataset_info): empty for in-memory data; add-head has no ``skipped``."""

    skipped: dict[str, int]
    """Per split, unreadable images left out."""
    sizes: dict[str, int]
    labelled: dict[str, dict[str, int]]
    """Per split, per head, rows labelled."""
    unlabelled_rows: int
    """labels.csv rows with every head empty (left out)."""


class AddHeadInfo(TypedDict):
    """How add-head grew the run; times in seconds."""

    parent_run: str
    heads: list[str]
    joint: str
    """``retrained``, ``left out`` or ``not in run``."""
    wall_s: float
    train_s: float
    feature_extract_s: float
    features_from_store: int
    features_extracted: int
    notes: list[str]


class _ComposeInfoRequired(TypedDict):
    mode: str
    copies: int
    """Swapped copies per train row and batch (additive, projected, projected-residual)."""
    weight: float
    """Their total loss weight against the row's 1."""


class ComposeInfo(_ComposeInfoRequired, total=False):
    """How the heads were taught to compose (train.compose): ``mode`` is what trained them (``none``,
    ``additive``, ``projected``, ``projected-residual``); under ``--compose auto`` also ``auto``."""

    auto: dict[str, Any]
    """train/autocompose.py: {"chosen", "decode" (catalogue or heads), "seen_loss_allowed", "folds":
    mode -> {"unseen", "seen"} fold joint accuracy, "wall_s" (the choice's seconds)}."""


class PairFoldRecord(TypedDict):
    """The pair-held-out folds (train.pairfold): each fold's held-out pairs by name (``make/type``)."""

    folds: int
    pairs_per_fold: int
    seed: int
    held_out: list[list[str]]


class _TrainRecordRequired(TypedDict):
    backbone: str
    image_size: list[int]
    """[height, width] in pixels."""
    weights: str
    weights_used: WeightsUsed
    data: str
    mode: str
    """``scratch``, ``fine_tune`` or ``freeze_base``."""
    budget: Budget
    seed: int
    strategy: str
    replicas: int
    dataset: DatasetInfo
    feature_extraction: FeatureExtraction
    versions: dict[str, str]
    variants: dict[str, TrainVariant]


class CatalogueInfo(TypedDict):
    """The dataset's catalogue.csv (edge/contract/catalogue.py), when it has one."""

    combinations: int
    """Listed combinations whose every class the heads know."""
    skipped: int
    """Rows naming a class some head does not know."""


class TrainRecord(_TrainRecordRequired, total=False):
    """train.json."""

    add_head: AddHeadInfo
    catalogue: CatalogueInfo
    """Written when the dataset has a catalogue; every split's metrics then hold
    ``joint_accuracy_catalogue``."""
    compose: ComposeInfo
    """Written by every run since compose existed (add-head keeps its parent's)."""
    pair_folds: PairFoldRecord


def _variant_key_errors(variant: Mapping[str, Any], where: str) -> list[str]:
    errors = key_errors(variant, TrainVariant, where)
    for key, kind in (("params", ParamCounts), ("macc", MaccCounts)):
        if key in variant:  # a missing one is named once, above
            errors += key_errors(variant[key], kind, f"{where} {key}")
    for split, m in variant.get("metrics", {}).items():
        errors += key_errors(m, SplitMetrics, f"{where} {split}")
        for head, hm in m.get("heads", {}).items():
            errors += key_errors(hm, HeadMetrics, f"{where} {split} head '{head}'")
    if "pair_folds" in variant:
        folds = variant["pair_folds"]
        errors += key_errors(folds, PairFoldMetrics, f"{where} pair_folds")
        for part in ("unseen", "seen"):
            if part in folds:
                errors += key_errors(folds[part], SplitMetrics, f"{where} pair_folds {part}")
    return errors


def train_key_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every key of a train.json document that ``TrainRecord`` (and the types in it) does not expect, or misses."""
    errors = key_errors(doc, TrainRecord, "train.json")
    for key, kind in (("weights_used", WeightsUsed), ("budget", Budget), ("dataset", DatasetInfo),
                      ("feature_extraction", FeatureExtraction), ("add_head", AddHeadInfo),
                      ("compose", ComposeInfo), ("pair_folds", PairFoldRecord)):
        if key in doc:
            errors += key_errors(doc[key], kind, f"train.json {key}")
    for approach, variant in doc.get("variants", {}).items():
        errors += _variant_key_errors(variant, f"variant {approach}")
    return errors
