"""The Python API for one's own app: load a deployment, label an image, follow a live source.

    import edge

    clf = edge.load("~/polyhead-models")             # multihead.int8 when the folder has several
    clf.predict("car.jpg")                           # {"make": [("Rhodes", 0.93)], "type": [("Sedan", 0.88)]}
    clf.predict(pil_image, top_k=3)                  # a PIL image, an (H, W, 3) uint8 array or JPEG bytes too
    for record in clf.live("-"):                     # stdin, an MJPEG URL, a video file, /dev/video0 ...
        if record.get("event") == "change":
            print(record["head"], record["label"])

Pixels go through the same preprocessing as training (``edge.runtime.preprocess``). ``live``
yields the records ``polyhead-edge live --format jsonl`` prints (docs/edge.md lists the keys).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.errors import PolyheadError


class Classifier:
    """One variant of a deployment, ready to run (``edge.load`` makes it)."""

    def __init__(self, predictor):
        self._predictor = predictor
        self.variant: str = predictor.variant.id
        self.heads: tuple[str, ...] = predictor.heads
        self.classes: dict[str, tuple[str, ...]] = {h: predictor.schema.head(h).classes for h in self.heads}

    def pixels(self, image: Any) -> np.ndarray:
        """The model's (H, W, 3) uint8 input for ``image``: a path, JPEG/PNG bytes, a PIL image, or an
        RGB (or greyscale) uint8 array of any size."""
        from edge.runtime.preprocess import ImageError, _to_rgb, resize_rgb

        p = self._predictor
        if isinstance(image, (str, os.PathLike, bytes, bytearray)):
            return p.load(os.path.expanduser(image) if isinstance(image, str) else image)
        if isinstance(image, np.ndarray):
            from PIL import Image

            if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
                raise ImageError(f"expected a uint8 (H, W, 3) RGB or (H, W) grey array. Received: "
                                 f"{image.dtype} {image.shape}")
            image = Image.fromarray(image)
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL here
            return resize_rgb(_to_rgb(image), p.height, p.width)
        raise ImageError(f"expected a path, image bytes, a PIL image or a numpy array. Received: {type(image).__name__}")

    def probabilities(self, image: Any) -> dict[str, np.ndarray]:
        """Each head's class probabilities (in ``classes[head]`` order) for one image."""
        return self._predictor.predict_image(self.pixels(image))

    def predict(self, image: Any, top_k: int = 1) -> dict[str, list[tuple[str, float]]]:
        """Each head's top-k (label, score) for one image, best first."""
        out = {}
        for head, probs in self.probabilities(image).items():
            order = np.argsort(-probs, kind="stable")[:max(1, top_k)]
            out[head] = [(self.classes[head][i], float(probs[i])) for i in order]
        return out

    def live(self, source: str, **options: Any) -> Iterator[dict[str, Any]]:
        """Records from a live source (``-``, an http(s) MJPEG URL, a video file, /dev/videoN, rtsp://),
        as ``polyhead-edge live --format jsonl`` prints them; ``options`` are ``LiveOptions``' fields
        (``top_k``, ``min_score``, ``smooth_s``, ``stall_s``, ``realtime`` ...). Stop by leaving the loop."""
        from edge.live.session import LiveOptions, LiveRun

        run = LiveRun(self._predictor, source, LiveOptions(**options))
        try:
            yield from run
        finally:
            run.close()

    def __repr__(self) -> str:
        return f"Classifier({self.variant!r}, heads={self.heads!r})"


def load(path: str | os.PathLike, variant: str | None = None, threads: int = 1) -> Classifier:
    """A deployment (a folder of .tflite files, or one file) ready to run: ``variant`` names one
    (e.g. ``multihead.float32``); by default the only one, else multihead, int8 when present.
    Errors are one-line ``edge.errors.PolyheadError``s."""
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover, select_variant

    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise PolyheadError(f"{path}: no such file or folder")
    return Classifier(Predictor(select_variant(discover(path), variant), num_threads=threads))
