"""Keras model files: the safe loader and the atomic writer every host stage uses.

Training saves ``models/<model>.keras`` with ``save_model``; conversion, add-head and the tests load
them with ``load_model``, so convert needs no part of train to read what train wrote. Keras is
imported on first use, never at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge.errors import PolyheadError, first_line


class KerasModelError(PolyheadError):
    """A model cannot be built or loaded (one line naming the value or file)."""


def load_model(path: str | Path, compile: bool = False) -> Any:
    """Load a ``.keras`` file with ``safe_mode=True`` (no Lambda/pickled code is ever run)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise KerasModelError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(str(path), compile=compile, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - a broken/hostile file is one line, not a traceback
        first = first_line(e, None)
        raise KerasModelError(f"{path}: cannot load model: {first}") from None


def save_model(model: Any, path: str | Path) -> Path:
    """Write a ``.keras`` file atomically: a temp file beside it, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{os.getpid()}.tmp.keras"
    model.save(str(tmp))
    os.replace(tmp, path)
    return path
