"""The frozen base's features: computed once per image, kept in the run's sharded feature store.

``FeatureCache`` hands every model of a frozen-base run the features of a split; they are
extracted a batch at a time from streamed images (the next batches decoded while the backbone
runs) into ``train.featurestore`` shards, so they survive an interrupted run and serve add-head.
Under a TF_CONFIG cluster each worker extracts its own shards (``extract_shards``); the chief then
trains the heads once on the result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.pipeline import Arrays, StreamedImages, take_rows
from train.featurestore import DEFAULT_SHARD_ROWS, FeatureStore, legacy_store_path

log = logging.getLogger("train.fit")


def weights_fingerprint(model: Any) -> str:
    """sha1 of a model's weights (the feature cache is keyed by the frozen backbone's)."""
    h = hashlib.sha1()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _forward(backbone: Any) -> Any:
    """The backbone in inference mode as a plain tf.function over float32 batches.

    Keras' ``predict`` costs more per batch than the forward pass of a small backbone, which
    would eat the cache's advantage."""
    import tensorflow as tf

    return tf.function(lambda x: backbone(tf.cast(x, tf.float32), training=False), reduce_retracing=True)


def _run_batches(forward: Any, images: Any, batch_size: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, ok per row) of every row of ``images``, batch by batch, the next batches decoded
    while the backbone runs; a row that cannot be decoded is a zero row with ok False."""
    import tensorflow as tf

    from datasets.pipeline import iter_batches

    feats = np.zeros((len(images), dim), np.float32)
    ok = np.zeros(len(images), bool)
    for start, batch, good in iter_batches(images, batch_size):
        feats[start: start + len(batch)] = np.asarray(forward(tf.constant(batch)))
        ok[start: start + len(batch)] = good
    feats[~ok] = 0.0  # a failed row was a black image: its features mean nothing
    return feats, ok


def extract_features(backbone: Any, images: Any, batch_size: int = 128) -> np.ndarray:
    """Pooled features (N, F) float32 of uint8 images (an array or ``StreamedImages``) through a
    (frozen) backbone in inference mode, a batch at a time."""
    dim = int(backbone.output.shape[-1])
    return _run_batches(_forward(backbone), images, batch_size, dim)[0]


def _image_keys(paths: Sequence[Path]) -> list[str]:
    """sha256 keys of the image files (add-head finds an image's features by its bytes)."""
    from datasets.pipeline import _pool
    from train.features import image_key

    def key(p: Path) -> str:
        try:
            return image_key(p)
        except OSError:
            return ""

    return list(_pool().map(key, paths))


def shard_rows_setting() -> int:
    """Rows per feature-store shard (``POLYHEAD_FEATURE_SHARD_ROWS``, default 4096)."""
    value = os.environ.get("POLYHEAD_FEATURE_SHARD_ROWS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_SHARD_ROWS


@dataclass(frozen=True)
class Worker:
    """This process's place among the extraction workers: shards ``index``, ``index + count``, ..."""

    index: int = 0
    count: int = 1

    @property
    def chief(self) -> bool:
        return self.index == 0


class FeatureCache:
    """Pooled features of a frozen backbone per (weights fingerprint, split), computed once.

    With a run folder, features live in its sharded store (``train.featurestore``): a split
    already there is memory-mapped, not recomputed; an interrupted extraction resumes at the
    first unfinished shard. Without one (``run_dir=None``) they are kept in memory.

    ``backbone_images`` counts images passed through a backbone (train.json reports it): with a
    frozen base every image of every split goes through once, for all approaches together.
    """

    def __init__(self, batch_size: int, run_dir: str | os.PathLike | None = None,
                 shard_rows: int | None = None, extract_batch: int = 128) -> None:
        self.batch_size = batch_size
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.shard_rows = shard_rows or shard_rows_setting()
        self.extract_batch = extract_batch
        self.backbone_images = 0
        self._extract_s = 0.0
        self._store: dict[tuple[str, str], Any] = {}
        self._forwards: dict[str, Any] = {}
        self._announced: set[str] = set()

    def _forward(self, backbone: Any, fingerprint: str) -> Any:
        if fingerprint not in self._forwards:
            self._forwards[fingerprint] = _forward(backbone)
        return self._forwards[fingerprint]

    def store(self, fingerprint: str) -> FeatureStore:
        assert self.run_dir is not None
        store = FeatureStore(self.run_dir, fingerprint, self.shard_rows)
        old = legacy_store_path(self.run_dir, fingerprint)
        if fingerprint not in self._announced and old.is_file() and not store.root.is_dir():
            log.info(f"{old}: the old single-file feature store; computing the features again into shards "
                     f"({store.root})")
        self._announced.add(fingerprint)
        return store

    def extract_shards(self, backbone: Any, fingerprint: str, split: str, images: Any,
                       paths: Sequence[Path], shards: Sequence[int]) -> None:
        """Extract and save ``shards`` of ``split`` (rows of ``images``; ``paths`` give the image keys)."""
        store = self.store(fingerprint)
        store.prepare_split(split, len(images))
        forward = self._forward(backbone, fingerprint)
        dim = int(backbone.output.shape[-1])
        for shard in shards:
            if store.has_shard(split, shard):
                continue  # another worker, or an earlier run, finished it
            a, b = store.shard_range(shard, len(images))
            feats, ok = _run_batches(forward, take_rows(images, slice(a, b)), self.extract_batch, dim)
            keys = _image_keys(paths[a:b]) if paths else None
            store.write_shard(split, shard, feats, ok, keys)
            self.backbone_images += int(ok.sum())
            log.debug(f"features {split} shard {shard}: rows {a}..{b - 1}")

    def get(self, backbone: Any, split: str, images: Any, paths: Sequence[Path] = ()) -> tuple[Any, float]:
        """(features of every row of ``images``, seconds spent now: 0 when cached or stored)."""
        fingerprint = weights_fingerprint(backbone)
        key = (fingerprint, split)
        if key in self._store:
            return self._store[key], 0.0
        t0 = time.perf_counter()
        if self.run_dir is None:
            self._store[key] = extract_features(backbone, images, self.extract_batch)
            self.backbone_images += len(images)
            return self._store[key], time.perf_counter() - t0
        store = self.store(fingerprint)
        self.extract_shards(backbone, fingerprint, split, images, paths, range(store.num_shards(len(images))))
        feats, _ = store.read_split(split, len(images))
        self._store[key] = feats
        return feats, time.perf_counter() - t0

    def resolve(self, backbone: Any, data: Mapping[str, Arrays], worker: Worker = Worker(),
                root: str | os.PathLike = "") -> dict[str, Arrays] | None:
        """Extract every split's features into the store, this worker's shards first; return the
        splits without their undecodable rows (their features cached here), or None on a worker
        that is not the chief (its part is done once its shards are saved).

        The chief then waits for the other workers' shards; a shard that does not appear while the
        others stall for ``POLYHEAD_WORKER_STALL_S`` seconds (default 600) it extracts itself."""
        from datasets.pipeline import keep_decoded

        t0 = time.perf_counter()
        fingerprint = weights_fingerprint(backbone)
        store = self.store(fingerprint)
        todo = [(s, i) for s, a in data.items() for i in range(store.num_shards(a.n))]
        mine = todo[worker.index::worker.count]
        by_split: dict[str, list[int]] = {}
        for s, i in mine:
            by_split.setdefault(s, []).append(i)
        for split, shards in by_split.items():
            a = data[split]
            self.extract_shards(backbone, fingerprint, split, a.images, a.paths, shards)
        if not worker.chief:
            return None
        if worker.count > 1:
            self._wait_for_others(backbone, fingerprint, data, todo)
        out: dict[str, Arrays] = {}
        for split, a in data.items():
            feats, ok = store.read_split(split, a.n)
            errors = [(a.paths[i] if a.paths else Path(f"row {i}"), "the image could not be decoded")
                      for i in np.flatnonzero(~ok)] if not ok.all() else []
            if errors and isinstance(a.images, StreamedImages):
                # The store says which rows failed; decode them again for their one-line reasons.
                errors = a.images.subset(~ok).decode(slice(None))[2] or errors
            kept = keep_decoded(a, ok, errors, split, root)
            self._store[(fingerprint, split)] = feats if ok.all() else take_rows(feats, ok)
            out[split] = kept
        self._extract_s += time.perf_counter() - t0
        return out

    def take_extract_s(self) -> float:
        """Seconds ``resolve`` spent extracting, once (train.json counts them with the first model)."""
        seconds, self._extract_s = self._extract_s, 0.0
        return seconds

    def _wait_for_others(self, backbone: Any, fingerprint: str, data: Mapping[str, Arrays],
                         todo: Sequence[tuple[str, int]]) -> None:
        store = self.store(fingerprint)
        stall_s = float(os.environ.get("POLYHEAD_WORKER_STALL_S", "600"))
        missing = [(s, i) for s, i in todo if not store.has_shard(s, i)]
        last_change, last_missing = time.monotonic(), len(missing)
        if missing:
            log.info(f"waiting for the other workers' {len(missing)} feature shards")
        while missing:
            if len(missing) < last_missing:
                last_change, last_missing = time.monotonic(), len(missing)
            if time.monotonic() - last_change > stall_s:
                log.warning(f"no feature shard from the other workers for {stall_s:.0f} s: extracting the "
                            f"{len(missing)} missing shards here")
                for s, i in missing:
                    self.extract_shards(backbone, fingerprint, s, data[s].images, data[s].paths, [i])
                break
            time.sleep(0.5)
            missing = [(s, i) for s, i in missing if not store.has_shard(s, i)]
