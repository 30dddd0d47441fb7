"""A live run: frames from the reader (latest-frame policy) decoded with ``load_image``, run through
a variant, smoothed, and turned into the records ``polyhead-edge live`` prints as JSON lines.

Record keys (scripts rely on them; docs/edge.md lists them):
- per frame: ``seq``, ``time``, ``source_time``, ``age_ms``, ``decode_ms``, ``invoke_ms``, ``fps``,
  ``dropped``, ``corrupt``, ``heads`` -> {head: {``raw``: [[label, score], ...], ``smoothed``: [...]}};
- events: ``event`` (``lost``, ``restored``, ``change``, ``end``) and ``time``, plus ``reason``,
  ``error``, or ``head``/``label``/``score``/``previous``/``seq`` for a change.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.live.frames import DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_PIXELS, JpegSplitter
from edge.live.reader import Frame, LatestSlot, Reader, SourceEvent
from edge.live.smooth import ChangeTracker, Smoother
from edge.live.sources import Source, open_source
from edge.runtime.predict import Predictor
from edge.runtime.preprocess import ImageError, load_image

log = logging.getLogger(__name__)

DEFAULT_MIN_SCORE = 0.9
"""Change events need this smoothed score (docs/edge.md, "Empty scenes", says how it was chosen)."""


@dataclass(frozen=True)
class LiveOptions:
    """How a live run behaves; the defaults are ``polyhead-edge live``'s."""

    top_k: int = 1
    smooth_s: float = 0.5
    """Time constant of the exponential average, seconds (0: off)."""
    min_score: float = DEFAULT_MIN_SCORE
    margin: float = 0.1
    """Hysteresis of change events."""
    stall_s: float = 5.0
    """No bytes for this long: the source is lost (0: never; for cameras that send only on motion)."""
    retry_max_s: float = 1.0
    """Longest wait between reconnect attempts (the wait doubles from 0.1 s up to this)."""
    nothing_label: str | None = None
    """A class meaning "no car here" (a model trained with a background class): never announced,
    and it clears the announced label. None: every class is a label (the default)."""
    realtime: bool = False
    """A video file at its own frame rate, dropping frames like a camera (default: every frame)."""
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS


def _top(classes: tuple[str, ...], probs: np.ndarray, k: int) -> list[list[Any]]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [[classes[i], round(float(probs[i]), 6)] for i in order]


class LiveRun:
    """Iterate it for records (dicts); ``close()`` (or leaving the iteration) stops the reader and
    reaps any child. ``image`` holds the last decoded frame's JPEG bytes for an annotator."""

    def __init__(self, predictor: Predictor, source: Source | str, options: LiveOptions = LiveOptions()):
        self.predictor = predictor
        self.options = options
        self.source = open_source(source, options.realtime) if isinstance(source, str) else source
        self.slot = LatestSlot(lossless=not self.source.live)
        self.splitter = JpegSplitter(options.max_frame_bytes, options.max_frame_pixels)
        self.reader = Reader(self.source, self.slot, self.splitter, options.stall_s, options.retry_max_s)
        self.classes = {h: predictor.schema.head(h).classes for h in predictor.heads}
        self.smoother = Smoother(options.smooth_s)
        self.tracker = ChangeTracker(self.classes, options.min_score, options.margin, options.nothing_label)
        self.results = 0
        self.decode_failures = 0
        self.last_jpeg: bytes | None = None
        self._times: collections.deque[float] = collections.deque(maxlen=30)
        self._warned_at = 0.0
        self._started = False
        self._smoothed: dict[str, np.ndarray] = {}
        self._stop_reason = ""

    def request_stop(self, reason: str) -> None:
        """Stop soon (safe from a signal handler): the iteration ends with an ``end`` record."""
        self._stop_reason = reason
        self.reader.stop.set()

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    @property
    def corrupt(self) -> int:
        """Frames skipped: cut from the stream but not decodable, or abandoned by the splitter."""
        return self.decode_failures + self.splitter.stats.corrupt

    def close(self) -> None:
        self.reader.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self._started:
            self._started = True
            self.reader.start()
        try:
            while True:
                item = self.slot.get(0.2)
                if self._stop_reason:
                    yield self._event(SourceEvent("end", time.time(), self._stop_reason))
                    return
                if item is None:
                    continue
                if isinstance(item, SourceEvent):
                    yield self._event(item)
                    if item.kind == "end":
                        return
                    if item.kind == "restored":
                        self.smoother.reset()
                    continue
                record = self._frame(item)
                if record is not None:
                    yield record
                    for c in self.tracker.update(self._smoothed):
                        yield {"event": "change", "time": record["time"], "seq": record["seq"], "head": c.head,
                               "label": c.label, "score": round(c.score, 6), "previous": c.previous}
        finally:
            self.close()

    def _event(self, ev: SourceEvent) -> dict[str, Any]:
        d: dict[str, Any] = {"event": ev.kind, "time": round(ev.time, 6)}
        if ev.reason:
            d["reason"] = ev.reason
        if ev.error:
            d["error"] = ev.error
        if ev.kind == "end":
            d.update(frames=self.reader.frames, results=self.results, dropped=self.dropped, corrupt=self.corrupt)
        return d

    def _frame(self, frame: Frame) -> dict[str, Any] | None:
        p = self.predictor
        t0 = time.perf_counter()
        try:
            pixels = load_image(frame.jpeg, p.height, p.width, self.options.max_frame_pixels)
        except ImageError as e:
            self.decode_failures += 1
            now = time.monotonic()
            if now - self._warned_at > 5:  # one line, not one per frame of a broken stream
                self._warned_at = now
                log.warning("frame %d skipped (%d so far): %s", frame.seq, self.corrupt, e)
            return None
        t1 = time.perf_counter()
        probs = p.predict_image(pixels)
        t2 = time.perf_counter()
        smoothed = self._smoothed = self.smoother.update(probs, frame.media_s if frame.media_s is not None else frame.mono)
        done = time.monotonic()
        self._times.append(done)
        self.results += 1
        self.last_jpeg = frame.jpeg
        span = self._times[-1] - self._times[0]
        k = self.options.top_k
        return {
            "seq": frame.seq,
            "time": round(time.time(), 6),
            "source_time": round(frame.time, 6),
            "age_ms": round((done - frame.mono) * 1000, 3),
            "decode_ms": round((t1 - t0) * 1000, 3),
            "invoke_ms": round((t2 - t1) * 1000, 3),
            "fps": round((len(self._times) - 1) / span, 3) if span > 0 else 0.0,
            "dropped": self.dropped,
            "corrupt": self.corrupt,
            "heads": {h: {"raw": _top(self.classes[h], probs[h], k), "smoothed": _top(self.classes[h], smoothed[h], k)}
                      for h in p.heads},
        }
