"""Training runs: the three approaches under one budget, checkpoints, resume, evaluation, train.json.

``run_training(TrainConfig)`` is what ``python -m train`` calls. A run folder holds
``config.json`` (resolved settings: rebuild with no flags), ``schema.json``, ``models/<model>.keras``,
``logs/<model>.csv`` (one row per epoch), ``checkpoints/<model>/epoch-NNNN.keras`` (atomic, each
epoch, last ``keep_checkpoints`` kept; ``done.json`` once the model is final) and ``train.json``.

Transfer learning (``freeze_base``) trains the heads on cached features: the frozen backbone runs
once per image instead of once per image per epoch; the trained Dense layers are then copied into
the full model. Batches come from ``train.data.epoch_order`` (a function of seed and epoch), so a
run resumed from a checkpoint sees the batches an uninterrupted run sees.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import PolyheadError
from edge.io import atomic_write_json, atomic_write_text
from edge.records_train import (
    Budget,
    ComposeInfo,
    DatasetInfo,
    FeatureExtraction,
    HeadMetrics,
    SplitMetrics,
    TrainRecord,
    TrainVariant,
    WeightsUsed,
)
from edge.schema import JOINT_OUTPUT, LabelSchema, all_heads_right
from train.data import EVAL_SPLITS, Arrays, eval_dataset, one_hot_targets, steps_per_epoch, train_dataset
from train.defaults import DEFAULTS, PROTOCOLS
from train.models import (
    BACKBONE_LAYER,
    ModelUnit,
    build_unit,
    load_model,
    model_units,
    output_names,
    output_size,
    save_model,
)

STRATEGIES = ("default", "mirrored", "multiworker")
_PROTOCOL = PROTOCOLS[DEFAULTS.protocol]
CONFIG_FILE = "config.json"
TRAIN_JSON = "train.json"
log = logging.getLogger(__name__)


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
    """Heads on cached features: ``none`` or ``additive`` (train/compose.py); never the joint model."""
    compose_copies: int = 2
    compose_weight: float = 3.0
    pair_folds: int = DEFAULTS.pair_folds
    """Pair-held-out validation folds of a frozen-base run (train/pairfold.py); 0: none."""

    def __post_init__(self) -> None:
        from edge.card import APPROACHES

        for a in self.approaches:
            if a not in APPROACHES:
                raise TrainError(f"unknown approach. Known: {list(APPROACHES)}. Received: approach={a!r}")
        if not self.approaches:
            raise TrainError("at least one approach is needed")
        from train.compose import COMPOSE_MODES

        if self.compose not in COMPOSE_MODES:
            raise TrainError(f"unknown compose. Known: {list(COMPOSE_MODES)}. Received: compose={self.compose!r}")
        if self.compose != "none" and not self.uses_feature_cache:
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
        """Frozen base on one device: heads train (and are evaluated) on features computed once."""
        return self.freeze_base and self.feature_cache and self.strategy == "default"

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


def make_strategy(name: str) -> Any:
    """``default`` | ``mirrored`` (all local devices) | ``multiworker`` (TF_CONFIG cluster)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")
        ]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise TrainError("--strategy multiworker needs the TF_CONFIG environment variable (see README)")
        return _multiworker_strategy()
    raise TrainError(f"unknown strategy. Known: {list(STRATEGIES)}. Received: strategy={name!r}")


def _multiworker_strategy() -> Any:
    """MultiWorkerMirroredStrategy whose ``reduce`` accepts Keras 3.15's scalar logs.

    Keras 3.15 reduces every log value with ``strategy.reduce("MEAN", v, axis=0)`` under
    multiworker, which fails for scalars (loss, accuracy): "Invalid reduction dimension 0 for input
    with 0 dimensions". A scalar is averaged over replicas instead (axis=None), as Keras does for
    single-worker strategies.
    """
    import tensorflow as tf

    class ScalarSafeMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
            if axis is not None:
                local = self.experimental_local_results(value)
                if local and getattr(local[0], "shape", None) is not None and local[0].shape.rank == 0:
                    axis = None
            return super().reduce(reduce_op, value, axis=axis)

    return ScalarSafeMultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (worker 0 is chief when no chief task)."""
    cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = cfg.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in cfg.get("cluster", {})
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not has_chief


# ---------------------------------------------------------------------------------------------
# Metrics


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


def split_metrics(schema: LabelSchema, probs_by_head: Mapping[str, np.ndarray], arrays: Arrays) -> SplitMetrics:
    """The contract's per-split record: n, per-head metrics (each over the rows labelled for that
    head, its ``n`` recorded), joint accuracy (every head right) over the rows labelled for every
    head (``n_all_labelled``)."""
    heads = {h: head_metrics(probs_by_head[h], arrays.labels[h]) for h in schema.head_names}
    full = arrays.fully_labelled
    all_right = full & all_heads_right(probs_by_head, arrays.labels, schema.head_names)
    n_full = int(full.sum())
    return SplitMetrics(n=arrays.n, heads=heads, n_all_labelled=n_full,
                        joint_accuracy=float(all_right.sum() / n_full) if n_full else 0.0)


def predict_probs(model: Any, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Softmax outputs of a polyhead model on uint8 images, keyed by output name."""
    out = model.predict(eval_dataset(images, None, batch_size), verbose=0)
    if not isinstance(out, dict):
        out = dict(zip(output_names(model), out if isinstance(out, (list, tuple)) else [out], strict=False))
    return {k: np.asarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Callbacks


class _Interrupt:
    """SIGINT flag shared by the callbacks; the first Ctrl-C stops after the batch, a second kills."""

    def __init__(self) -> None:
        self.flag = False
        self._old: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True
        log.warning("\ninterrupt: stopping after this batch (Ctrl-C again to kill)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _callbacks(interrupt: _Interrupt, ckpt_dir: Path, log_path: Path, initial_epoch: int, keep: int,
               chief: bool) -> list[Any]:
    import keras

    class StopOnInterrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if interrupt.flag:
                self.model.stop_training = True

    class EpochCheckpoint(keras.callbacks.Callback):
        """Save model + optimizer after every *finished* epoch, atomically (temp file, os.replace)."""

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if interrupt.flag:  # a partial epoch is not a checkpoint
                return
            save_model(self.model, ckpt_dir / f"epoch-{epoch + 1:04d}.keras")
            for old in sorted(ckpt_dir.glob("epoch-*.keras"))[:-keep]:
                old.unlink(missing_ok=True)

    class CsvLog(keras.callbacks.Callback):
        """logs/<model>.csv, one row per finished epoch; rows past the resume point are dropped."""

        def __init__(self) -> None:
            super().__init__()
            self.rows: list[dict[str, Any]] = []
            if log_path.is_file():
                with open(log_path, newline="") as f:
                    self.rows = [r for r in csv.DictReader(f) if int(r.get("epoch", 0)) <= initial_epoch]

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if interrupt.flag:
                return
            row = {"epoch": epoch + 1, **{k: f"{float(v):.6g}" for k, v in (logs or {}).items()}}
            self.rows.append(row)
            keys: list[str] = []
            for r in self.rows:
                keys += [k for k in r if k not in keys]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
            w.writeheader()
            w.writerows(self.rows)
            atomic_write_text(log_path, buf.getvalue())

    # The log row is written before the checkpoint: a kill between the two leaves a row that the
    # resumed run rewrites (rows past the checkpoint are dropped), never a missing row.
    return [StopOnInterrupt(), *([CsvLog()] if chief else []), EpochCheckpoint()]


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path | None, int]:
    """(path, epoch) of the newest finished-epoch checkpoint, or (None, 0)."""
    best: tuple[Path | None, int] = (None, 0)
    for p in ckpt_dir.glob("epoch-*.keras"):
        try:
            e = int(p.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if e > best[1]:
            best = (p, e)
    return best


# ---------------------------------------------------------------------------------------------
# Training one model


def _compile(model: Any, cfg: TrainConfig, outputs: Sequence[str], steps_per_execution: int = 1,
             learning_rate: float | None = None) -> None:
    import keras

    if cfg.label_smoothing > 0:
        loss = {o: keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing,
                                                        reduction="mean_with_sample_weight") for o in outputs}
        metrics = {o: [keras.metrics.CategoricalAccuracy(name="accuracy")] for o in outputs}
    else:
        loss = {o: keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight") for o in outputs}
        metrics = {o: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for o in outputs}
    weights = {o: float(cfg.head_weights.get(o, 1.0)) for o in outputs}
    # mean_with_sample_weight: a head's loss is the mean over the batch's rows labelled for it (not
    # diluted by the rows it skips); with no sample weights it is the plain batch mean.
    # weighted_metrics, not metrics: Keras 3 passes sample weights to weighted metrics only, and a
    # head's sample weights (0 on rows without its label) must mask its accuracy like its loss.
    # Without sample weights the two are the same.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate or cfg.learning_rate),
        loss=loss,
        loss_weights=weights,
        weighted_metrics=metrics,
        jit_compile=False,
        steps_per_execution=steps_per_execution,
    )


def _targets(cfg: TrainConfig, schema: LabelSchema, arrays: Arrays, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    t = arrays.targets(outputs)
    if cfg.label_smoothing > 0:
        t = one_hot_targets(t, {o: output_size(schema, o) for o in outputs})
    return t


def _val_rows(val: Arrays | None, outputs: tuple[str, ...]) -> np.ndarray | None:
    """Validation rows a model can score: a joint model skips combinations unseen in train (and rows
    not labelled for every head), a head model rows without its label; None: no row."""
    if val is None or val.n == 0:
        return None
    rows = unit_rows(val, outputs)
    rows = np.ones(val.n, dtype=bool) if rows is None else rows
    return rows if rows.any() else None


def unit_rows(arrays: Arrays, outputs: tuple[str, ...]) -> np.ndarray | None:
    """Rows a model of ``outputs`` trains on: those labelled for at least one of its outputs (joint:
    labelled for every head and a combination seen in train); None when that is every row."""
    rows = np.zeros(arrays.n, dtype=bool)
    for o in outputs:
        rows |= arrays.labelled(o)
    return None if rows.all() else rows


def _sample_weights(arrays: Arrays, outputs: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """Per-output 0/1 weights masking the rows without an output's label; None when every row has
    every label (then training is exactly what it was before missing labels existed)."""
    weights = arrays.sample_weights(outputs)
    return None if all(w.all() for w in weights.values()) else weights


def _prebuild(model: Any, strategy: Any, images: np.ndarray, targets: Mapping[str, np.ndarray]) -> None:
    """Build optimizer/loss/metric state from a local batch before ``fit`` under multiworker.

    Keras 3.15's ``_maybe_symbolic_build`` reduces a *distributed* batch with the strategy, which
    MultiWorkerMirroredStrategy's collective ops cannot do for a nested (x, {head: y}) batch
    ("Attempt to convert a value (PerReplica ...)"). Building first from local shapes and skipping
    that step for this model avoids it; the built state is the same.
    """
    n = min(len(images), 2)
    batch = (images[:n].astype(np.float32), {k: v[:n] for k, v in targets.items()})
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None


def set_bn_momentum(model: Any, momentum: float) -> None:
    """Set ``momentum`` on every BatchNormalization layer (nested models included)."""
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def freeze_batchnorm(model: Any) -> int:
    """Keep every BatchNormalization layer in inference mode; returns how many.

    In Keras 3 a BatchNormalization layer with ``trainable=False`` normalises with its moving
    statistics and updates neither them nor gamma/beta, even inside ``fit``: fine-tuning a
    pretrained base on small batches of a new domain then keeps ImageNet's statistics instead of
    replacing them with noisy batch ones (the standard Keras transfer-learning recipe).
    """
    import keras

    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


def weights_fingerprint(model: Any) -> str:
    """sha1 of a model's weights (the feature cache is keyed by the frozen backbone's)."""
    h = hashlib.sha1()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def extract_features(backbone: Any, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Pooled features of uint8 images through a (frozen) backbone in inference mode.

    A plain tf.function over large batches: Keras' ``predict`` costs more per batch than the
    forward pass of a small backbone, which would eat the cache's advantage.
    """
    import tensorflow as tf

    forward = tf.function(lambda x: backbone(tf.cast(x, tf.float32), training=False), reduce_retracing=True)
    parts = [np.asarray(forward(tf.constant(images[i: i + batch_size])))
             for i in range(0, len(images), batch_size)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, backbone.output.shape[-1]), np.float32)


class FeatureCache:
    """Pooled features of a frozen backbone per (weights fingerprint, split), computed once.

    ``backbone_images`` counts images passed through a backbone (train.json reports it): with a
    frozen base every image of every split goes through once, for all approaches together.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.backbone_images = 0
        self._store: dict[tuple[str, str], np.ndarray] = {}

    def get(self, backbone: Any, split: str, images: np.ndarray) -> tuple[np.ndarray, float]:
        """(features, seconds spent now: 0 when cached)."""
        key = (weights_fingerprint(backbone), split)
        if key not in self._store:
            t0 = time.perf_counter()
            self._store[key] = extract_features(backbone, images)
            self.backbone_images += len(images)
            return self._store[key], time.perf_counter() - t0
        return self._store[key], 0.0


def fit_heads_on_features(
    model: Any,
    cfg: TrainConfig,
    schema: LabelSchema,
    unit_outputs: tuple[str, ...],
    train_feats: np.ndarray,
    train: Arrays,
    val_feats: np.ndarray | None,
    val: Arrays | None,
    epochs: int,
    callbacks: list[Any] | None = None,
    initial_epoch: int = 0,
    heads: Any = None,
    verbose: int = 0,
) -> Any:
    """Train ``model``'s heads on cached features; copy them into ``model``. Returns the heads model.

    ``train_feats`` and ``train`` are the same rows; a head's rows without its label weigh 0."""
    from train.models import heads_model

    if heads is None:
        heads = heads_model(model)
        compile_heads(heads, cfg, unit_outputs, train.n)
    fit_heads(heads, cfg, schema, unit_outputs, train_feats, train, val_feats, val, epochs, callbacks,
              initial_epoch, verbose)
    for o in unit_outputs:
        model.get_layer(o).set_weights(heads.get_layer(o).get_weights())
    return heads


def compile_heads(heads: Any, cfg: TrainConfig, outputs: Sequence[str], n_train: int) -> None:
    """Compile a features -> heads model for ``n_train`` rows.

    Many head steps per tf.function call: a head step is tiny and Keras' per-call overhead would
    dominate. Same batches, same updates."""
    _compile(heads, cfg, outputs, steps_per_execution=min(32, steps_per_epoch(n_train, cfg.batch_size)))


def fit_heads(
    heads: Any,
    cfg: TrainConfig,
    schema: LabelSchema,
    outputs: tuple[str, ...],
    train_feats: np.ndarray,
    train: Arrays,
    val_feats: np.ndarray | None,
    val: Arrays | None,
    epochs: int,
    callbacks: list[Any] | None = None,
    initial_epoch: int = 0,
    verbose: int = 0,
) -> None:
    """Fit a compiled features -> heads model on the run's batch order; rows without a head's label weigh 0."""
    # compose hook (train/compose.py): the same batches plus swapped copies of each row.
    from train.compose import compose_applies, composed_train_dataset

    if compose_applies(cfg.compose, outputs):
        ds = composed_train_dataset(cfg, schema, outputs, train_feats, train, initial_epoch, epochs)
    else:
        ds = train_dataset(train_feats, _targets(cfg, schema, train, outputs), cfg.batch_size, cfg.seed,
                           initial_epoch, epochs, sample_weights=_sample_weights(train, outputs))
    val_data = None
    if val_feats is not None and val is not None:
        val_data = eval_dataset(val_feats, _targets(cfg, schema, val, outputs), cfg.batch_size,
                                sample_weights=_sample_weights(val, outputs))
    if epochs > initial_epoch:
        # steps_per_epoch is required: the dataset holds every remaining epoch back to back (so
        # Keras keeps one iterator across epochs instead of taking it all as one epoch).
        heads.fit(ds, epochs=epochs, initial_epoch=initial_epoch, validation_data=val_data,
                  steps_per_epoch=steps_per_epoch(train.n, cfg.batch_size), shuffle=False,
                  callbacks=callbacks or [], verbose=verbose)


@dataclass(frozen=True)
class UnitResult:
    unit: ModelUnit
    path: Path
    train_wall_s: float
    epochs: int
    feature_extract_s: float = 0.0


@dataclass(frozen=True)
class _UnitJob:
    """What both training paths of one model share: where it lives and where it resumes from."""

    unit: ModelUnit
    cfg: TrainConfig
    schema: LabelSchema
    train: Arrays
    val: Arrays | None
    val_rows: np.ndarray | None
    """``val``'s rows within the whole val split (the cached features are the whole split's)."""
    ckpt: Path | None
    done_epochs: int
    callbacks: list[Any]
    verbose: int
    whole_val: Arrays | None = None
    train_rows: np.ndarray | None = None
    """The train rows this model learns from (None: all); ``train`` is the whole split, so the
    feature cache, keyed by split, is shared by models that use different rows."""

    @property
    def train_used(self) -> Arrays:
        return self.train if self.train_rows is None else self.train.subset(self.train_rows)


def _finished_unit(unit: ModelUnit, model_path: Path, done_path: Path) -> UnitResult | None:
    """The record of a model finished by an earlier run (``done.json`` beside its file), else None."""
    if not (model_path.is_file() and done_path.is_file()):
        return None
    done = json.loads(done_path.read_text())
    return UnitResult(unit, model_path, float(done["train_wall_s"]), int(done["epochs"]),
                      float(done.get("feature_extract_s", 0.0)))


def _train_features(job: _UnitJob, base: Any, cache: FeatureCache) -> tuple[np.ndarray, float]:
    """The cached features of the train rows ``job`` learns from, and the seconds extracting took now."""
    feats, extract_s = cache.get(base, "train", job.train.images)
    if job.train_rows is not None:
        feats = feats[job.train_rows]
    return feats, extract_s


def _fit_on_cached_features(job: _UnitJob, model: Any, cache: FeatureCache) -> float:
    """Frozen base: the heads train on the backbone's cached features. Returns extraction seconds."""
    base = model.get_layer(BACKBONE_LAYER)
    train_feats, extract_s = _train_features(job, base, cache)
    val_feats = None
    if job.val is not None and job.val_rows is not None:
        # The whole split once, shared by every model; a joint model takes its seen rows.
        val_feats, dt = cache.get(base, "val", job.whole_val.images)
        val_feats = val_feats[job.val_rows]
        extract_s += dt
    heads = load_model(job.ckpt, compile=True) if job.ckpt is not None else None
    fit_heads_on_features(model, job.cfg, job.schema, job.unit.outputs, train_feats, job.train_used, val_feats, job.val,
                          job.cfg.epochs, job.callbacks, job.done_epochs, heads, job.verbose)
    return extract_s


def _fit_whole_model(job: _UnitJob, model: Any, strategy: Any, cache: FeatureCache) -> tuple[Any, float]:
    """Images through the model every epoch (optional head-only warm-up first on cached features).

    Returns the trained model (a resumed run continues from its checkpoint's model) and the
    warm-up's feature-extraction seconds.
    """
    cfg, train, outputs = job.cfg, job.train_used, job.unit.outputs
    extract_s = 0.0
    if cfg.warmup_epochs > 0 and job.ckpt is None:
        # Head-only warm-up on cached features, then every layer trains.
        feats, extract_s = _train_features(job, model.get_layer(BACKBONE_LAYER), cache)
        fit_heads_on_features(model, cfg, job.schema, outputs, feats, train, None, None, cfg.warmup_epochs,
                              verbose=job.verbose)
    with strategy.scope():
        if job.ckpt is not None:
            model = load_model(job.ckpt, compile=True)
        else:
            model.get_layer(BACKBONE_LAYER).trainable = not cfg.freeze_base
            if cfg.use_freeze_bn:
                freeze_batchnorm(model)
            _compile(model, cfg, outputs, learning_rate=cfg.fine_tune_learning_rate)
    ds = train_dataset(train.images, _targets(cfg, job.schema, train, outputs), cfg.batch_size, cfg.seed,
                       job.done_epochs, cfg.epochs, augment=cfg.use_augment,
                       shard_by_data=cfg.strategy == "multiworker",
                       sample_weights=_sample_weights(train, outputs))
    # Validation logs only (the final evaluation runs on the saved model, one device); with
    # several replicas a ragged last batch is dropped, and a val set under one batch skipped.
    distributed = int(strategy.num_replicas_in_sync) > 1
    val = job.val
    if val is not None and distributed and val.n < cfg.batch_size:
        val = None
    val_data = None if val is None else eval_dataset(val.images, _targets(cfg, job.schema, val, outputs),
                                                     cfg.batch_size, drop_remainder=distributed,
                                                     sample_weights=_sample_weights(val, outputs))
    if cfg.strategy == "multiworker":
        _prebuild(model, strategy, train.images[: cfg.batch_size], _targets(cfg, job.schema, train, outputs))
    if cfg.epochs > job.done_epochs:
        model.fit(ds, epochs=cfg.epochs, initial_epoch=job.done_epochs, validation_data=val_data,
                  steps_per_epoch=steps_per_epoch(train.n, cfg.batch_size), shuffle=False,
                  callbacks=job.callbacks, verbose=job.verbose)
    return model, extract_s


def _save_final(model: Any, model_path: Path) -> None:
    """Save ``models/<name>.keras`` atomically, without optimizer state."""
    import keras

    # An uncompiled view of the same layers: the final file holds no optimizer state (smaller,
    # and keras_bytes compares like with like across approaches).
    save_model(keras.Model(model.input, model.output, name=model.name), model_path)


def _wall_before(ckpt_dir: Path, ckpt: Path | None) -> float:
    """Training seconds spent before the checkpoint a resumed run starts from (0 without one)."""
    wall_file = ckpt_dir / "wall.json"
    prior = json.loads(wall_file.read_text()) if (ckpt and wall_file.is_file()) else {}
    return float(prior.get("train_wall_s", 0.0)) if ckpt else 0.0


def _unit_job(unit: ModelUnit, cfg: TrainConfig, schema: LabelSchema, data: Mapping[str, Arrays],
              ckpt: Path | None, done_epochs: int, callbacks: list[Any]) -> _UnitJob:
    """One model's job: the train and val rows it can learn from and be scored on, and where it resumes."""
    whole_val = data.get("val")
    val_rows = _val_rows(whole_val, unit.outputs)
    return _UnitJob(
        unit, cfg, schema, data["train"], None if val_rows is None else whole_val.subset(val_rows), val_rows,
        ckpt, done_epochs, callbacks,
        cfg.verbose if cfg.verbose is not None else (1 if sys.stdout.isatty() else 2),
        whole_val,
        train_rows=unit_rows(data["train"], unit.outputs),
    )


def _announce_train_rows(job: _UnitJob) -> None:
    """Say how many train rows a model learns from when it skips some; refuse a model with none."""
    if job.train_rows is None:
        return
    unit = job.unit
    n_used = int(job.train_rows.sum())
    what = "labelled for every head" if JOINT_OUTPUT in unit.outputs else f"labelled for {', '.join(unit.outputs)}"
    if n_used == 0:
        raise TrainError(f"{job.cfg.data}: {unit.name} has no train row {what}")
    log.info(f"[{unit.name}] trains on {n_used} of {job.train.n} train rows ({what})")


def _announce_start(job: _UnitJob) -> None:
    """One line: the backbone, input size, what trains and where a resumed run picks up."""
    cfg = job.cfg
    log.info(f"[{job.unit.name}] {cfg.backbone} {cfg.image_size[0]}x{cfg.image_size[1]}, "
             f"{'frozen base, feature cache' if cfg.uses_feature_cache else 'frozen base' if cfg.freeze_base else 'all layers'}"
             f"{f', resuming after epoch {job.done_epochs}' if job.ckpt else ''}")


def _build_model(job: _UnitJob, strategy: Any) -> Any:
    """The untrained model of ``job``'s unit, its base frozen for a frozen run or a warm-up."""
    cfg = job.cfg
    with strategy.scope():
        model = build_unit(job.unit, cfg.backbone, job.schema, cfg.image_size, cfg.weights, cfg.seed,
                           freeze_base=cfg.freeze_base or cfg.warmup_epochs > 0,
                           backbone_kwargs=cfg.backbone_kwargs)
    if cfg.bn_momentum is not None and not cfg.freeze_base:
        set_bn_momentum(model, cfg.bn_momentum)
    return model


def _note_wall_or_stop(ckpt_dir: Path, wall: float, unit: ModelUnit, interrupt: _Interrupt) -> None:
    """Record the training seconds beside the newest checkpoint; on Ctrl-C stop (TrainingInterrupted)."""
    _, last_epoch = latest_checkpoint(ckpt_dir)
    if last_epoch:
        atomic_write_json(ckpt_dir / "wall.json", {"train_wall_s": wall, "epoch": last_epoch})
    if interrupt.flag:
        raise TrainingInterrupted(
            f"interrupted: {unit.name} stopped after epoch {last_epoch} (checkpoint saved); "
            f"continue with --resume"
        )


def train_unit(
    unit: ModelUnit,
    cfg: TrainConfig,
    schema: LabelSchema,
    data: Mapping[str, Arrays],
    run_dir: Path,
    strategy: Any,
    cache: FeatureCache,
    interrupt: _Interrupt,
    chief: bool = True,
) -> UnitResult:
    """Train (or resume, or skip if done) one model; save models/<name>.keras; return its record."""
    model_path = run_dir / "models" / unit.file_name
    ckpt_dir = run_dir / "checkpoints" / unit.name
    done_path = ckpt_dir / "done.json"
    finished = _finished_unit(unit, model_path, done_path)
    if finished is not None:
        return finished

    ckpt, done_epochs = latest_checkpoint(ckpt_dir)
    wall_before = _wall_before(ckpt_dir, ckpt)
    callbacks = _callbacks(interrupt, ckpt_dir, run_dir / "logs" / f"{unit.name}.csv", done_epochs,
                           cfg.keep_checkpoints, chief)
    job = _unit_job(unit, cfg, schema, data, ckpt, done_epochs, callbacks)
    _announce_train_rows(job)
    t0 = time.perf_counter()
    _announce_start(job)
    model = _build_model(job, strategy)
    if cfg.uses_feature_cache:
        extract_s = _fit_on_cached_features(job, model, cache)
    else:
        model, extract_s = _fit_whole_model(job, model, strategy, cache)
    wall = wall_before + time.perf_counter() - t0
    _note_wall_or_stop(ckpt_dir, wall, unit, interrupt)
    _save_final(model, model_path)
    atomic_write_json(done_path, {"train_wall_s": wall, "epochs": cfg.epochs, "feature_extract_s": extract_s})
    return UnitResult(unit, model_path, wall, cfg.epochs, extract_s)


# ---------------------------------------------------------------------------------------------
# A whole run


def _setup_determinism(cfg: TrainConfig) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001 - best effort; metrics tolerance covers the rest
            pass


def run_training(cfg: TrainConfig, data: Mapping[str, Arrays] | None = None,
                 schema: LabelSchema | None = None, cache: FeatureCache | None = None) -> dict[str, Any]:
    """Train every model of ``cfg.approaches`` into ``cfg.out``; write and return train.json.

    ``data``/``schema`` may be given (tests); otherwise the dataset folder ``cfg.data`` is loaded.
    ``cache``: a feature cache shared by several runs on the same data (``make compose``: one
    backbone pass for every seed and mode); its ``backbone_images`` then counts them all.
    Raises TrainingInterrupted on SIGINT (after saving checkpoints and logs).
    """
    import tensorflow as tf

    from train.backbones import resolve_weights

    # Fail fast (before decoding any image) on an unknown backbone or missing weights file.
    weights_used = resolve_weights(cfg.backbone, cfg.weights, cfg.image_size, **cfg.backbone_kwargs)
    strategy = make_strategy(cfg.strategy)  # first: MultiWorkerMirroredStrategy must precede other TF work
    tf.get_logger().setLevel("ERROR")  # retracing notices when predicting with several models
    chief = is_chief()
    run_dir = Path(cfg.out)
    tmp_dir = None
    if not chief:  # non-chief workers save to scratch (saving may need every worker), then drop it
        tmp_dir = Path(tempfile.mkdtemp(prefix="polyhead-worker-"))
        run_dir = tmp_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir, cfg)
    data_info: DatasetInfo = {}
    if data is None:
        from train.data import load_arrays

        schema, data, data_info = load_arrays(cfg.data, cfg.image_size,
                                               allow_outside_paths=cfg.allow_outside_paths)
    if schema is None:
        raise TrainError("schema is required with in-memory data")
    if "train" not in data or data["train"].n == 0:
        raise TrainError(f"{cfg.data}: no training images")
    atomic_write_json(run_dir / CONFIG_FILE, cfg.to_dict())
    schema.save(run_dir / "schema.json")
    _setup_determinism(cfg)

    cache = cache if cache is not None else FeatureCache(cfg.batch_size)
    variants: dict[str, TrainVariant] = {}
    store_base = None
    with _Interrupt() as interrupt:
        for approach in cfg.approaches:
            results = [train_unit(u, cfg, schema, data, run_dir, strategy, cache, interrupt, chief)
                       for u in model_units(approach, schema)]
            if not chief:
                continue
            variants[approach] = _approach_record(approach, results, cfg, schema, data, cache)
            if store_base is None and cfg.uses_feature_cache:
                store_base = load_model(results[0].path).get_layer(BACKBONE_LAYER)
    if chief and store_base is not None and cfg.uses_feature_cache:
        _store_features(run_dir, store_base, data, cache)
    if tmp_dir is not None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return {}
    record = _run_record(cfg, weights_used, int(strategy.num_replicas_in_sync), data_info, data, cache, variants)
    # pair-fold hook (train/pairfold.py): heads retrained with whole pairs held out, per approach.
    from train.pairfold import run_pair_folds

    run_pair_folds(record, cfg, schema, data, cache, store_base if chief else None)
    atomic_write_json(run_dir / TRAIN_JSON, record)
    return record


def _run_record(cfg: TrainConfig, weights_used: WeightsUsed, replicas: int, data_info: DatasetInfo,
                data: Mapping[str, Arrays], cache: FeatureCache, variants: dict[str, TrainVariant]) -> TrainRecord:
    """train.json: the run's settings, versions, backbone passes and every approach's record."""
    return TrainRecord(
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


def _approach_record(approach: str, results: Sequence[UnitResult], cfg: TrainConfig, schema: LabelSchema,
                     data: Mapping[str, Arrays], cache: FeatureCache) -> TrainVariant:
    """train.json's record of one approach: its files, costs, times and metrics per evaluation split."""
    from train.macc import approach_costs

    per_split: dict[str, dict[str, np.ndarray]] = {s: {} for s in EVAL_SPLITS if s in data}
    models = [load_model(r.path) for r in results]
    for m in models:
        m.get_layer(BACKBONE_LAYER).trainable = not cfg.freeze_base
        for split in per_split:
            per_split[split].update(_eval_probs(m, cfg, cache, split, data[split]))
    metrics = {s: split_metrics(schema, schema.head_probs(o), data[s]) for s, o in per_split.items()}
    costs = approach_costs(models)
    return TrainVariant(
        approach=approach,
        # Train rows that carried each output's label (joint: rows labelled for every head).
        train_n={o: int(data["train"].labelled(o).sum()) for r in results for o in r.unit.outputs},
        files=[f"models/{r.unit.file_name}" for r in results],
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


def _store_features(run_dir: Path, base: Any, data: Mapping[str, Arrays], cache: FeatureCache) -> None:
    """Save the frozen base's features of every image loaded from files (``features/``), so
    ``add-head`` trains a new head without decoding or running the base again. Train and val come
    from the feature cache; the evaluation splits cost one more backbone pass here."""
    from train.features import image_key, save_features

    keys: list[str] = []
    parts: list[np.ndarray] = []
    for split, arrays in data.items():
        if not arrays.paths or arrays.n == 0:
            continue
        feats, _ = cache.get(base, split, arrays.images)
        keys += [image_key(p) for p in arrays.paths]
        parts.append(feats)
    if parts:
        save_features(run_dir, weights_fingerprint(base), keys, np.concatenate(parts))


def _check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to mix runs: existing checkpoints must come from the same settings."""
    old = run_dir / CONFIG_FILE
    if not old.is_file():
        return
    try:
        prev = json.loads(old.read_text())
    except (OSError, json.JSONDecodeError):
        return
    keys = ("backbone", "image_size", "batch_size", "seed", "weights", "freeze_base", "compose")
    cur = cfg.to_dict()
    diff = [k for k in keys if k in prev and prev[k] != cur[k]]
    has_ckpt = any((run_dir / "checkpoints").glob("*/epoch-*.keras")) or any((run_dir / "models").glob("*.keras"))
    if diff and has_ckpt:
        raise TrainError(
            f"{run_dir}: holds a run with different {', '.join(f'{k}={prev[k]}' for k in diff)}; "
            f"use another --out or delete it"
        )


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

