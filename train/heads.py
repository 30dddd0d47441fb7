"""Fitting heads: compile, targets and sample weights, and the features -> heads training used by
frozen-base runs, the fine-tuning warm-up and add-head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.contract.approaches import output_size
from edge.contract.schema import LabelSchema
from train.config import TrainConfig
from train.data import Arrays, eval_dataset, one_hot_targets, steps_per_epoch, train_dataset


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
    # compose hook (train/compose.py): the same batches plus swapped copies of each row; projected
    # (train/subspace.py): each head's kernel also kept off the other heads' components.
    from contextlib import nullcontext

    from train.compose import compose_applies, composed_train_dataset, train_components
    from train.subspace import log_bases, projected_kernels, projection_bases

    constraint: Any = nullcontext()
    if compose_applies(cfg.compose, outputs):
        comps = train_components(schema, train_feats, train)
        ds = composed_train_dataset(cfg, schema, outputs, train_feats, train, initial_epoch, epochs, comps)
        if cfg.compose in ("projected", "projected-residual"):
            bases = projection_bases(comps, outputs, residual=cfg.compose == "projected-residual")
            log_bases(bases, int(train_feats.shape[1]), comps)
            constraint = projected_kernels(heads, bases)
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
        with constraint:
            heads.fit(ds, epochs=epochs, initial_epoch=initial_epoch, validation_data=val_data,
                      steps_per_epoch=steps_per_epoch(train.n, cfg.batch_size), shuffle=False,
                      callbacks=callbacks or [], verbose=verbose)
