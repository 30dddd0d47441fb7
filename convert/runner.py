"""Run a converted file exactly as the device does: through ``edge.runtime.model.Model``.

Numpy and ``edge`` only (no TensorFlow): the same code runs in the host venv (ai-edge-litert) and
in the legacy venv (tflite-runtime 2.14) through ``convert.legacy_probe``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.contract.card import ModelCard
from edge.contract.card_archive import read_card

CHECK_BATCH = 256
"""Check images read and run per batch: the check never holds more pixels than this many rows (and
the rows decoding ahead). A multiple of Keras's predict batch (32), so Keras sees the same batches
as it would on the whole split."""


class FileScores:
    """A converted file run as the device runs it, its scores (N, K) per card output key (a head,
    or ``joint``) filled a batch at a time. Integer outputs come back dequantized."""

    def __init__(self, path: str | os.PathLike, n: int, num_threads: int = 1, runtime: str | None = None) -> None:
        from edge.runtime.interpreter import load_interpreter_class
        from edge.runtime.model import Model

        cls, name, version = load_interpreter_class(runtime)
        self.card: ModelCard = read_card(path)
        self.model = Model(Path(path), self.card, num_threads, cls)
        self.runtime = f"{name} {version}".strip()  # "<runtime> <version>"
        self.outputs = {k: np.empty((n, len(self.card.output_classes(k))), np.float32) for k in self.card.outputs}

    def add(self, start: int, batch: np.ndarray) -> None:
        """Score uint8 ``batch`` (B, H, W, 3), rows ``start`` to ``start + B`` of the N."""
        for i, pixels in enumerate(batch, start):  # one image at a time, as on the device
            for k, v in self.model.run(pixels).items():
                self.outputs[k][i] = v


def predict_outputs(
    path: str | os.PathLike, images: Any, num_threads: int = 1, runtime: str | None = None
) -> tuple[ModelCard, dict[str, np.ndarray], str]:
    """Scores (N, K) per card output key (a head, or ``joint``) for uint8 images (N, H, W, 3).

    ``images`` is an array or anything sliced like one (a ``datasets.pipeline.StreamedImages``):
    it is read ``CHECK_BATCH`` rows at a time, so streamed images are never decoded whole.
    Returns (card, outputs, "<runtime> <version>"). Integer outputs come back dequantized.
    """
    scores = FileScores(path, len(images), num_threads, runtime)
    for start in range(0, len(images), CHECK_BATCH):
        scores.add(start, np.asarray(images[start: start + CHECK_BATCH]))
    return scores.card, scores.outputs, scores.runtime
