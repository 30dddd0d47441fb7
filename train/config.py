"""A run's settings: ``TrainConfig`` (``config.json`` is this, resolved), its errors and file names."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from artifacts import layout
from edge.errors import PolyheadError
from train.defaults import DEFAULTS, PROTOCOLS

STRATEGIES = ("default", "mirrored", "multiworker")


_PROTOCOL = PROTOCOLS[DEFAULTS.protocol]


CONFIG_FILE = layout.CONFIG


TRAIN_JSON = layout.TRAIN_RECORD


class TrainError(PolyheadError):
    """A training setting or run folder is unusable (one line)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT: training stopped after saving; ``--resume`` continues."""


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; ``config.json`` is this, resolved."""

    data: str
    out: str
    backbone: str = DEFAULTS.backbone
    approaches: tuple[str, ...] = DEFAULTS.approaches
    image_size: tuple[int, int] = (DEFAULTS.image_size, DEFAULTS.image_size)
    batch_size: int = DEFAULTS.batch_size
    epochs: int = DEFAULTS.epochs
    learning_rate: float = DEFAULTS.learning_rate
    seed: int = DEFAULTS.seed
    weights: str = _PROTOCOL.weights or DEFAULTS.weights
    freeze_base: bool = _PROTOCOL.freeze_base
    warmup_epochs: int = _PROTOCOL.warmup_epochs
    fine_tune_learning_rate: float | None = _PROTOCOL.fine_tune_learning_rate
    """Learning rate once every layer trains after a warm-up (None: ``learning_rate``)."""
    freeze_bn: bool | None = None
    """BatchNorm layers stay in inference mode (moving statistics kept) while the rest fine-tunes.
    None: on when fine-tuning pretrained weights (standard transfer learning), off from scratch."""
    augment: bool | None = None
    """None: on when fine-tuning pretrained weights, off otherwise."""
    feature_cache: bool = True
    strategy: str = "default"
    head_weights: dict[str, float] = field(default_factory=dict)
    label_smoothing: float = 0.0
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    bn_momentum: float | None = 0.9
    """BatchNorm momentum of every layer that trains (None: keep the backbone's). Keras' own
    applications use 0.999: after a few hundred steps from scratch the moving statistics are still
    mostly their initial values and evaluation collapses; 0.9 tracks short schedules."""
    deterministic: bool = True
    keep_checkpoints: int = 2
    verbose: int | None = None
    allow_outside_paths: bool = False
    """Accept labels.csv image paths that are absolute or leave the dataset folder (refused by
    default); convert/ and report/ honour the value saved in config.json."""
    compose: str = DEFAULTS.compose
    """Heads on cached features: ``none``, ``additive`` (train/compose.py), ``projected``,
    ``projected-residual`` (train/subspace.py) or ``auto`` (train/autocompose.py: chosen on the
    run's pair-held-out folds; ``none`` without a frozen base); never the joint model."""
    compose_copies: int = 2
    compose_weight: float = 3.0
    pair_folds: int = DEFAULTS.pair_folds
    """Pair-held-out validation folds of a frozen-base run (train/pairfold.py); 0: none."""

    def __post_init__(self) -> None:
        from edge.contract.card import APPROACHES

        for a in self.approaches:
            if a not in APPROACHES:
                raise TrainError(f"unknown approach. Known: {list(APPROACHES)}. Received: approach={a!r}")
        if not self.approaches:
            raise TrainError("at least one approach is needed")
        from train.defaults import COMPOSE_MODES

        if self.compose not in COMPOSE_MODES:
            raise TrainError(f"unknown compose. Known: {list(COMPOSE_MODES)}. Received: compose={self.compose!r}")
        if self.compose not in ("none", "auto") and not self.uses_feature_cache:
            # The copies are made in feature space: heads must train on the frozen base's cached features.
            raise TrainError(f"compose={self.compose} needs a frozen base trained on cached features (--protocol "
                             f"frozen, feature cache on, strategy default). Received: freeze_base={self.freeze_base}, "
                             f"feature_cache={self.feature_cache}, strategy={self.strategy}")
        if self.compose_copies < 0 or self.compose_weight < 0 or self.pair_folds < 0:
            raise TrainError(f"bad value: compose_copies={self.compose_copies}, compose_weight={self.compose_weight}, "
                             f"pair_folds={self.pair_folds}")
        if self.strategy not in STRATEGIES:
            raise TrainError(f"unknown strategy. Known: {list(STRATEGIES)}. Received: strategy={self.strategy!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise TrainError(f"image_size must be [height, width] >= 8. Received: image_size={list(self.image_size)}")
        for name in ("batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise TrainError(f"{name} must be >= 1. Received: {name}={getattr(self, name)}")
        if (self.warmup_epochs < 0 or self.learning_rate <= 0 or not 0 <= self.label_smoothing < 1
                or (self.fine_tune_learning_rate is not None and self.fine_tune_learning_rate <= 0)):
            raise TrainError(
                f"bad value: warmup_epochs={self.warmup_epochs}, learning_rate={self.learning_rate}, "
                f"fine_tune_learning_rate={self.fine_tune_learning_rate}, "
                f"label_smoothing={self.label_smoothing}"
            )

    @property
    def uses_feature_cache(self) -> bool:
        """Frozen base: heads train (and are evaluated) on features computed once, on one device.
        Under ``multiworker`` every worker extracts its own feature shards; the chief trains the heads."""
        return self.freeze_base and self.feature_cache and self.strategy in ("default", "multiworker")

    @property
    def fine_tunes_pretrained(self) -> bool:
        """Every layer trains, starting from pretrained weights: the default of ``freeze_bn`` and ``augment``."""
        return (not self.freeze_base) and self.weights != "none"

    @property
    def use_freeze_bn(self) -> bool:
        return self.fine_tunes_pretrained if self.freeze_bn is None else bool(self.freeze_bn)

    @property
    def use_augment(self) -> bool:
        return self.fine_tunes_pretrained if self.augment is None else bool(self.augment)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["approaches"] = list(self.approaches)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown config keys {unknown}. Known: {sorted(known)}")
        d = dict(d)
        if "approaches" in d:
            a = d["approaches"]
            d["approaches"] = tuple(a.split(",")) if isinstance(a, str) else tuple(a)
        if "image_size" in d:
            s = d["image_size"]
            d["image_size"] = (int(s), int(s)) if isinstance(s, (int, float)) else tuple(int(x) for x in s)
        return cls(**d)


def package_versions() -> dict[str, str]:
    """Versions of the packages a run depends on (recorded in train.json)."""
    import keras
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
