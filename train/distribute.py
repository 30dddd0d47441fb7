"""Distribution: the tf.distribute strategy of a run, and which worker of a TF_CONFIG cluster this is."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from train.config import STRATEGIES, TrainError


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


def worker_task() -> Any:
    """This process's (index, count) among the TF_CONFIG cluster's tasks (chief first, then the
    workers), as a ``train.featurecache.Worker``; (0, 1) without TF_CONFIG."""
    from train.featurecache import Worker

    cfg = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster, task = cfg.get("cluster", {}), cfg.get("task", {})
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    count = len(chiefs) + len(workers)
    if not task or count == 0:
        return Worker()
    index = int(task.get("index", 0))
    if task.get("type") == "worker":
        index += len(chiefs)
    elif task.get("type") != "chief":
        raise TrainError(f"TF_CONFIG task type {task.get('type')!r}: feature extraction knows 'chief' and 'worker'")
    if not 0 <= index < count:
        raise TrainError(f"TF_CONFIG task index {task.get('index')} is outside the cluster of {count} tasks")
    return Worker(index, count)
