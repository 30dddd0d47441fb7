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

import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.keras_io import load_model, save_model
from artifacts.layout import RunLayout
from datasets.folder import dataset_catalogue
from datasets.pipeline import take_rows, verify
from edge.contract.schema import JOINT_OUTPUT, LabelSchema
from edge.io import atomic_write_json
from train.autocompose import resolve_auto
from train.callbacks import _callbacks, _Interrupt, latest_checkpoint
from train.config import (
    CONFIG_FILE,
    STRATEGIES,
    TRAIN_JSON,
    TrainConfig,
    TrainError,
    TrainingInterrupted,
    package_versions,
)
from train.data import Arrays, dataset_info, eval_dataset, open_arrays, steps_per_epoch, train_dataset
from train.distribute import _prebuild, is_chief, make_strategy
from train.featurecache import FeatureCache, extract_features, weights_fingerprint
from train.heads import (
    _compile,
    _sample_weights,
    _targets,
    _val_rows,
    compile_heads,
    fit_heads,
    fit_heads_on_features,
    unit_rows,
)
from train.metrics import head_metrics, predict_probs, split_metrics
from train.models import BACKBONE_LAYER, ModelUnit, build_unit, model_units
from train.records import DatasetInfo, TrainVariant
from train.run_record import _approach_record, _run_record, summary_table

# The names other modules and tests import from train.fit, now defined in the modules above.
__all__ = [
    "CONFIG_FILE", "STRATEGIES", "TRAIN_JSON", "TrainConfig", "TrainError", "TrainingInterrupted",
    "package_versions", "make_strategy", "is_chief", "head_metrics", "split_metrics", "predict_probs",
    "latest_checkpoint", "weights_fingerprint", "extract_features", "FeatureCache", "fit_heads_on_features",
    "compile_heads", "fit_heads", "unit_rows", "summary_table", "set_bn_momentum", "freeze_batchnorm",
    "UnitResult", "train_unit", "run_training",
]
log = logging.getLogger(__name__)




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
        feats = take_rows(feats, job.train_rows)
    return feats, extract_s


def _fit_on_cached_features(job: _UnitJob, model: Any, cache: FeatureCache) -> float:
    """Frozen base: the heads train on the backbone's cached features. Returns extraction seconds."""
    base = model.get_layer(BACKBONE_LAYER)
    train_feats, extract_s = _train_features(job, base, cache)
    val_feats = None
    if job.val is not None and job.val_rows is not None:
        # The whole split once, shared by every model; a joint model takes its seen rows.
        val_feats, dt = cache.get(base, "val", job.whole_val.images)
        if not job.val_rows.all():  # every row: the memory-mapped store itself, no copy
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
    run = RunLayout(run_dir)
    model_path = run.model(unit.name)
    ckpt_dir = run.checkpoints(unit.name)
    done_path = ckpt_dir / "done.json"
    finished = _finished_unit(unit, model_path, done_path)
    if finished is not None:
        return finished

    ckpt, done_epochs = latest_checkpoint(ckpt_dir)
    wall_before = _wall_before(ckpt_dir, ckpt)
    callbacks = _callbacks(interrupt, ckpt_dir, run.log(unit.name), done_epochs,
                           cfg.keep_checkpoints, chief)
    job = _unit_job(unit, cfg, schema, data, ckpt, done_epochs, callbacks)
    _announce_train_rows(job)
    # The run's feature extraction (before any model) is counted with its first model, as when
    # the first model extracted the features itself.
    extracted_before = cache.take_extract_s()
    t0 = time.perf_counter()
    _announce_start(job)
    model = _build_model(job, strategy)
    if cfg.uses_feature_cache:
        extract_s = _fit_on_cached_features(job, model, cache)
    else:
        model, extract_s = _fit_whole_model(job, model, strategy, cache)
    extract_s += extracted_before
    wall = wall_before + extracted_before + time.perf_counter() - t0
    _note_wall_or_stop(ckpt_dir, wall, unit, interrupt)
    _save_final(model, model_path)
    atomic_write_json(done_path, {"train_wall_s": wall, "epochs": cfg.epochs, "feature_extract_s": extract_s})
    return UnitResult(unit, model_path, wall, cfg.epochs, extract_s)


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

    ``data``/``schema`` may be given (tests); otherwise the dataset folder ``cfg.data`` is opened
    and its images are decoded on the fly. Raises TrainingInterrupted on SIGINT (after saving
    checkpoints and logs). ``cache``: a feature cache shared by several runs on the same data
    (``make compose``: one backbone pass for every seed and mode). On a frozen base under a
    TF_CONFIG cluster every worker extracts its own feature shards; the chief alone then trains
    the heads.
    """
    import tensorflow as tf

    from train.backbones import resolve_weights

    # Fail fast (before decoding any image) on an unknown backbone or missing weights file.
    weights_used = resolve_weights(cfg.backbone, cfg.weights, cfg.image_size, **cfg.backbone_kwargs)
    # First: MultiWorkerMirroredStrategy must precede other TF work. Cached features need none:
    # the workers only share the store, and the heads train on the chief.
    strategy = make_strategy("default" if cfg.uses_feature_cache else cfg.strategy)
    tf.get_logger().setLevel("ERROR")  # retracing notices when predicting with several models
    chief = is_chief()
    run_dir, tmp_dir = _run_dir(cfg, chief)
    _check_resume(run_dir, cfg)
    from_files = data is None
    schema, data, ds, root = _open_data(cfg, data, schema)
    catalogue = dataset_catalogue(cfg.data, schema) if Path(cfg.data).is_dir() else None
    # A cache shared across runs reads the first run's store: the same features.
    cache = cache if cache is not None else FeatureCache(cfg.batch_size, Path(cfg.out))
    store_base = None
    if cfg.uses_feature_cache:
        resolved, store_base = _extract_all(cfg, schema, data, cache, root)
        if resolved is None:  # a worker other than the chief: its shards are saved
            return {}
        data = resolved
    else:
        data = {s: verify(a, s, root) for s, a in data.items()}
    data_info: DatasetInfo = dataset_info(data, ds.unlabelled_rows) if from_files else {}
    atomic_write_json(RunLayout(run_dir).config, cfg.to_dict())
    schema.save(RunLayout(run_dir).schema)
    _setup_determinism(cfg)
    # --compose auto (train/autocompose.py): chosen on the pair-held-out folds before any model trains.
    cfg, auto = resolve_auto(cfg, schema, data, cache, store_base if chief else None, catalogue)

    variants = _train_approaches(cfg, schema, data, run_dir, strategy, cache, chief, catalogue)
    if tmp_dir is not None:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return {}
    record = _run_record(cfg, weights_used, int(strategy.num_replicas_in_sync), data_info, data, cache, variants,
                         auto, catalogue)
    # pair-fold hook (train/pairfold.py): heads retrained with whole pairs held out, per approach.
    from train.pairfold import run_pair_folds

    run_pair_folds(record, cfg, schema, data, cache, store_base if chief else None, catalogue)
    atomic_write_json(RunLayout(run_dir).train_record, record)
    return record


def _run_dir(cfg: TrainConfig, chief: bool) -> tuple[Path, Path | None]:
    """(the folder models are saved to, made; the scratch folder to drop afterwards or None).
    Non-chief workers of a whole-model run save to scratch (saving may need every worker)."""
    run_dir, tmp_dir = Path(cfg.out), None
    if not chief and not cfg.uses_feature_cache:
        tmp_dir = run_dir = Path(tempfile.mkdtemp(prefix="polyhead-worker-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, tmp_dir


def _train_approaches(cfg: TrainConfig, schema: LabelSchema, data: Mapping[str, Arrays], run_dir: Path, strategy: Any,
                      cache: FeatureCache, chief: bool, catalogue: Any) -> dict[str, TrainVariant]:
    """Train every model of every approach; the chief returns each approach's train.json record."""
    variants: dict[str, TrainVariant] = {}
    with _Interrupt() as interrupt:
        for approach in cfg.approaches:
            results = [train_unit(u, cfg, schema, data, run_dir, strategy, cache, interrupt, chief)
                       for u in model_units(approach, schema)]
            if chief:
                variants[approach] = _approach_record(approach, results, cfg, schema, data, cache, catalogue)
    return variants


def _open_data(cfg: TrainConfig, data: Mapping[str, Arrays] | None,
               schema: LabelSchema | None) -> tuple[LabelSchema, Mapping[str, Arrays], Any, Any]:
    """(schema, splits, the Dataset or None, the image root): the dataset folder ``cfg.data`` opened,
    or the splits a caller gave; one-line TrainError without a schema or training images."""
    ds, root = None, cfg.data
    if data is None:
        schema, data, ds = open_arrays(cfg.data, cfg.image_size, allow_outside_paths=cfg.allow_outside_paths)
        root = ds.root
    if schema is None:
        raise TrainError("schema is required with in-memory data")
    if "train" not in data or data["train"].n == 0:
        raise TrainError(f"{cfg.data}: no training images")
    return schema, data, ds, root


def _extract_all(cfg: TrainConfig, schema: LabelSchema, data: Mapping[str, Arrays], cache: FeatureCache,
                 root: Any) -> tuple[dict[str, Arrays] | None, Any]:
    """Every split's frozen-base features into the run's store (this worker's shards; the chief
    waits for the rest): (the splits without their undecodable rows, or None on a non-chief
    worker; the frozen base).

    The base is the first model's, built before the run seeds its random state, so the models
    trained after it start exactly as they would without it."""
    from train.distribute import worker_task

    unit = model_units(cfg.approaches[0], schema)[0]
    model = build_unit(unit, cfg.backbone, schema, cfg.image_size, cfg.weights, cfg.seed, freeze_base=True,
                       backbone_kwargs=cfg.backbone_kwargs)
    base = model.get_layer(BACKBONE_LAYER)
    return cache.resolve(base, data, worker_task(), root), base


def _check_resume(run_dir: Path, cfg: TrainConfig) -> None:
    """Refuse to mix runs: existing checkpoints must come from the same settings."""
    run = RunLayout(run_dir)
    old = run.config
    if not old.is_file():
        return
    try:
        prev = json.loads(old.read_text())
    except (OSError, json.JSONDecodeError):
        return
    keys = ("backbone", "image_size", "batch_size", "seed", "weights", "freeze_base", "compose")
    cur = cfg.to_dict()
    diff = [k for k in keys if k in prev and prev[k] != cur[k]]
    has_ckpt = any(run.checkpoints_dir.glob("*/epoch-*.keras")) or bool(run.keras_files())
    if diff and has_ckpt:
        raise TrainError(
            f"{run_dir}: holds a run with different {', '.join(f'{k}={prev[k]}' for k in diff)}; "
            f"use another --out or delete it"
        )
