"""Predictions: a variant's files run together (joint outputs decoded into heads), one image or a
stream of them with decoding prefetched in a background thread."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.contract.catalogue import Catalogue, read_catalogue
from edge.errors import ModelError, first_line
from edge.runtime.interpreter import load_interpreter_class
from edge.runtime.model import Model
from edge.runtime.preprocess import ImageError, load_image
from edge.runtime.variants import Variant
from edge.safety.modelcheck import DEFAULT_LIMITS, ModelLimits
from edge.safety.paths import regular_file_problem
from edge.text import printable


@dataclass(frozen=True)
class HeadResult:
    """One head's answer for one image: the top label, its score, and the top-k (label, score)."""

    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Prediction:
    """One image's result: per-head answers, or an error message (then ``heads`` is empty)."""

    path: str
    heads: dict[str, HeadResult]
    error: str | None = None
    catalogue: dict[str, str] | None = None
    """With a catalogue (``Predictor.use_catalogue``): the listed combination with the highest summed
    log-probability of the heads, head -> label."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.path, "error": self.error}
        out: dict[str, Any] = {
            "image": self.path,
            "heads": {
                h: {"label": r.label, "score": round(r.score, 6),
                    "top_k": [[label, round(s, 6)] for label, s in r.top_k]}
                for h, r in self.heads.items()
            },
        }
        if self.catalogue is not None:
            out["catalogue"] = dict(self.catalogue)
        return out


class Predictor:
    """Runs a variant: every file it is made of, joint outputs decoded into heads."""

    def __init__(self, variant: Variant, num_threads: int = 1, runtime: str | None = None,
                 limits: ModelLimits = DEFAULT_LIMITS, trial_run: bool = True):
        cls, self.runtime, self.runtime_version = load_interpreter_class(runtime)
        self.variant = variant
        self.num_threads = num_threads
        self.models = tuple(Model(p, c, num_threads, cls, limits)
                            for p, c in zip(variant.files, variant.cards, strict=True))
        self.schema = variant.schema
        self.heads = variant.heads
        self.height, self.width = self.models[0].input_size
        self._classes = {h: self.schema.head(h).classes for h in self.heads}
        self.catalogue: Catalogue | None = None
        # One trial run at load: a model that cannot run fails here, once, with one line (ModelError),
        # instead of on every image. (bench passes False: it times the first inference itself.)
        if trial_run:
            self.predict_image(np.zeros((self.height, self.width, 3), np.uint8))

    def predict_image(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Per-head class probabilities (K,) of one (H, W, 3) uint8 image."""
        probs: dict[str, np.ndarray] = {}
        for model in self.models:
            probs.update(self.schema.head_probs(model.run(pixels)))
        return probs

    def predict_array(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-head probabilities (N, K) for a uint8 batch (N, H, W, 3) at the card's size."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, 3) or batch.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 batch (N, {self.height}, {self.width}, 3). Received: {batch.dtype} {batch.shape}"
            )
        result = {h: np.empty((len(batch), len(c)), np.float32) for h, c in self._classes.items()}
        for i, pixels in enumerate(batch):  # one image at a time: the tensors never reallocate
            for h, p in self.predict_image(pixels).items():
                result[h][i] = p
        return result

    def load(self, path: str | os.PathLike | bytes) -> np.ndarray:
        """An image file as this variant's input pixels (raises ImageError). Only a regular file is
        opened: a FIFO, a device or a symlink loop is an ImageError, never a hang."""
        if not isinstance(path, (bytes, bytearray)):
            problem = regular_file_problem(path)
            if problem:
                raise ImageError(problem)
        return load_image(path, self.height, self.width)

    def use_catalogue(self, path: str | os.PathLike) -> Catalogue:
        """Also decode every prediction among the combinations of a catalogue.csv (one column per
        head of this model; edge/contract/catalogue.py). Raises CatalogueError (one line)."""
        self.catalogue = read_catalogue(path, self._classes)
        return self.catalogue

    def to_prediction(self, probs: dict[str, np.ndarray], path: str, top_k: int = 1) -> Prediction:
        """A Prediction from one image's per-head probabilities."""
        heads = {}
        for h, p in probs.items():
            classes = self._classes[h]
            k = max(1, min(top_k, len(classes)))
            order = np.argsort(-p, kind="stable")[:k]
            top = tuple((classes[i], float(p[i])) for i in order)
            heads[h] = HeadResult(top[0][0], top[0][1], top)
        combination = None
        if self.catalogue is not None and len(self.catalogue.rows):
            best = self.catalogue.decode({h: np.asarray(probs[h])[None, :] for h in self.catalogue.heads})
            combination = {h: self._classes[h][int(best[h][0])] for h in self.catalogue.heads}
        return Prediction(str(path), {h: heads[h] for h in self.heads}, catalogue=combination)

    def predict_file(self, path: str | os.PathLike, top_k: int = 1) -> Prediction:
        """One image file to labels; an unreadable image gives a Prediction with ``error`` set."""
        try:
            return self.to_prediction(self.predict_image(self.load(path)), str(path), top_k)
        except (ImageError, ModelError) as e:
            return Prediction(str(path), {}, str(e))

    def predict_files(self, paths: Iterable[str | os.PathLike], top_k: int = 1) -> list[Prediction]:
        """``predict_file`` over many files; errors are per file, the rest go on."""
        return [self.predict_file(p, top_k) for p in paths]

    def info(self) -> dict[str, Any]:
        return {"variant": self.variant.id, "runtime": self.runtime, "runtime_version": self.runtime_version,
                "threads": self.num_threads}


def iter_predictions(predictor: Predictor, paths: Iterable[str | os.PathLike], top_k: int = 1,
                     prefetch: int = 4) -> Iterator[Prediction]:
    """Yield a Prediction per path, in order, decoding the next images in a background thread.

    Pillow and the interpreter both release the GIL, so decoding overlaps inference and the
    throughput approaches the slower of the two. Closing the generator early stops the thread.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        for p in paths:
            if stop.is_set():
                return
            try:
                item = (str(p), predictor.load(p), None)
            except ImageError as e:
                item = (str(p), None, str(e))
            except Exception as e:  # never let the thread die silently: report it for this file
                item = (str(p), None, f"{p}: {first_line(e)}")
            if not put(item):
                return
        put(done)

    thread = threading.Thread(target=produce, name="polyhead-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            path, pixels, error = item
            if error is None:
                try:
                    pred = predictor.to_prediction(predictor.predict_image(pixels), path, top_k)
                except ModelError as e:  # the model failed on this image: its record, and the run goes on
                    pred = Prediction(path, {}, f"{printable(path)}: {e}")
            else:
                pred = Prediction(path, {}, error)
            yield pred
    finally:
        stop.set()
        thread.join(timeout=5)
