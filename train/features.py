"""Image keys, and the *old* single-file feature store (``features/<fingerprint>.npz``).

Runs now keep their features in the sharded store (``train.featurestore``). ``stored_features``
reads either: the sharded store, else a run folder's old single ``.npz`` (with one line saying
so), so add-head works on runs made before the store was sharded.

Images are keyed by the sha256 of their bytes, not their path: a dataset merged with ``--copy``
(new paths, same bytes) still finds its features. The store is keyed by the backbone's weights
fingerprint, so features of another base are never mixed in. Loading uses ``allow_pickle=False``:
the file holds plain arrays only.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

STORE_DIR = "features"


def image_key(path: str | os.PathLike) -> str:
    """sha256 of an image file's bytes (hex, 32 characters)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def store_path(run_dir: str | os.PathLike, fingerprint: str) -> Path:
    return Path(run_dir) / STORE_DIR / f"{fingerprint[:16]}.npz"


def save_features(run_dir: str | os.PathLike, fingerprint: str, keys: Sequence[str], features: np.ndarray) -> Path:
    """Write (atomically) the features of the images ``keys`` (one row each) for this backbone."""
    path = store_path(run_dir, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, keys=np.asarray(list(keys), dtype="U32"), features=np.asarray(features, np.float32),
                 fingerprint=np.asarray(fingerprint))
    os.replace(tmp, path)
    return path


def load_features(run_dir: str | os.PathLike, fingerprint: str) -> dict[str, np.ndarray]:
    """{image key: features} stored for this backbone, or {} when the run has none (or a broken file)."""
    path = store_path(run_dir, fingerprint)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return {}
            keys, feats = z["keys"], z["features"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return {}  # a cache: when unreadable, features are computed again
    if feats.ndim != 2 or len(keys) != len(feats):
        return {}
    return {str(k): feats[i] for i, k in enumerate(keys)}


def stored_features(run_dir: str | os.PathLike, fingerprint: str) -> dict[str, np.ndarray]:
    """{image key: features} of a run for this backbone: the sharded store, else the old single
    ``.npz`` (read, with one line saying so), else {}."""
    import logging

    from train.featurestore import FeatureStore

    keyed = FeatureStore(run_dir, fingerprint).keyed()
    if keyed:
        return keyed
    old = load_features(run_dir, fingerprint)
    if old:
        logging.getLogger("train.add_head").info(
            f"{store_path(run_dir, fingerprint)}: reading the old single-file feature store ({len(old)} images)")
    return old
