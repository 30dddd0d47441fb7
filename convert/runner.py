"""Run a converted file exactly as the device does: through ``edge.runtime.model.Model``.

Numpy and ``edge`` only (no TensorFlow): the same code runs in the host venv (ai-edge-litert) and
in the legacy venv (tflite-runtime 2.14) through ``convert.legacy_probe``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edge.contract.card import ModelCard
from edge.contract.card_archive import read_card


def predict_outputs(
    path: str | os.PathLike, images: np.ndarray, num_threads: int = 1, runtime: str | None = None
) -> tuple[ModelCard, dict[str, np.ndarray], str]:
    """Scores (N, K) per card output key (a head, or ``joint``) for uint8 images (N, H, W, 3).

    Returns (card, outputs, "<runtime> <version>"). Integer outputs come back dequantized.
    """
    from edge.runtime.interpreter import load_interpreter_class
    from edge.runtime.model import Model

    cls, name, version = load_interpreter_class(runtime)
    card = read_card(path)
    model = Model(Path(path), card, num_threads, cls)
    outs = {k: np.empty((len(images), len(card.output_classes(k))), np.float32) for k in card.outputs}
    for i, pixels in enumerate(images):  # one image at a time, as on the device
        for k, v in model.run(pixels).items():
            outs[k][i] = v
    return card, outs, f"{name} {version}".strip()

