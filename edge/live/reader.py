"""The latest-frame policy: a reader thread drains the source all the time and keeps only the newest
whole JPEG; the model takes it when it is ready. A frame replaced before the model took it is a
counted drop. The model never sees a frame twice, nor a placeholder: during an outage it waits.

The reader also owns the faults: a stalled or lost source gives a ``lost`` event, is reopened with
backoff (network, device, ffmpeg; a file's ffmpeg restarts and skips the frames already seen) and
gives ``restored`` with its next frame. Stdin cannot be reopened: a stall there is ``lost`` until
bytes come again, and its end is the end.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

from edge.live.ffmpeg import FfmpegSource
from edge.live.frames import JpegSplitter
from edge.live.sources import FatalSourceError, NotMjpeg, Source, SourceError

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2
"""How long one read waits: the longest a stop request or a stall goes unnoticed."""
RETRY_MIN_S = 0.1
MAX_PENDING = 64
"""Items waiting for the model at most (events are rare; frames replace each other)."""
MAX_REPLAY_FAILURES = 3


@dataclass(frozen=True)
class Frame:
    """One encoded frame and when its last byte arrived."""

    seq: int
    jpeg: bytes
    time: float
    """Wall-clock arrival (``time.time()``)."""
    mono: float
    """Monotonic arrival: ages are measured on this clock."""
    media_s: float | None = None
    """Position in a recorded video (seq / frame rate), when frames do not arrive in real time."""


@dataclass(frozen=True)
class SourceEvent:
    """``lost``, ``restored`` or ``end`` (``error`` set: the source failed for good)."""

    kind: str
    time: float
    reason: str = ""
    error: str = ""


class LatestSlot:
    """The hand-over between the reader and the model: the newest frame, and events in order."""

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self.dropped = 0
        self._items: collections.deque[Frame | SourceEvent] = collections.deque()
        self._cond = threading.Condition()

    def wait_taken(self, stop: threading.Event) -> None:
        """Lossless (a video file without --realtime): wait until the model took the last frame."""
        with self._cond:
            while self.lossless and not stop.is_set() and any(isinstance(i, Frame) for i in self._items):
                self._cond.wait(0.1)

    def put_frame(self, frame: Frame, stop: threading.Event) -> None:
        """Offer a frame: it replaces a frame the model has not taken yet (a drop). Lossless, the
        caller waits with ``wait_taken`` first, so nothing is replaced."""
        self.wait_taken(stop)
        with self._cond:
            if self._items and isinstance(self._items[-1], Frame):
                self._items[-1] = frame
                self.dropped += 1
            else:
                self._items.append(frame)
                while len(self._items) > MAX_PENDING:  # only if the model stalls through many outages
                    old = next(i for i in self._items if isinstance(i, Frame))
                    self._items.remove(old)
                    self.dropped += 1
            self._cond.notify_all()

    def put_event(self, event: SourceEvent) -> None:
        with self._cond:
            self._items.append(event)
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | SourceEvent | None:
        """The next item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class Reader:
    """The thread that drains ``source`` into ``slot`` (see the module docstring)."""

    def __init__(self, source: Source, slot: LatestSlot, splitter: JpegSplitter, stall_s: float = 5.0,
                 retry_max_s: float = 1.0):
        self.source = source
        self.slot = slot
        self.splitter = splitter
        self.stall_s = stall_s
        self.retry_max_s = retry_max_s
        self.frames = 0
        """Frames cut from the source so far (the next frame's seq)."""
        self.opens = 0
        self.stop = threading.Event()
        self._lost_at: float | None = None
        self._warned_at = -10.0
        self._thread = threading.Thread(target=self._run, name="polyhead-live-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop reading and close the source (its ffmpeg child reaped)."""
        self.stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        self.source.close()

    def _lost(self, reason: str) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.debug("lost: %s", reason)
            self.slot.put_event(SourceEvent("lost", time.time(), reason))

    def _run(self) -> None:
        try:
            self._loop()
        except FatalSourceError as e:  # e.g. stdin became unreadable
            self.slot.put_event(SourceEvent("end", time.time(), "source failed", str(e)))
        except Exception as e:  # a bug must not leave the model waiting forever: end, with the reason
            log.exception("live reader failed")
            self.slot.put_event(SourceEvent("end", time.time(), "reader failed", f"{type(e).__name__}: {e}"))
        finally:
            self.source.close()

    def _loop(self) -> None:
        backoff = RETRY_MIN_S
        replay_failures = 0
        while not self.stop.is_set():
            try:
                self.source.open()
            except NotMjpeg as e:
                log.info("%s; reading it with ffmpeg", e)
                self.source = FfmpegSource(self.source.url)  # type: ignore[attr-defined]
                continue
            except FatalSourceError as e:
                self.slot.put_event(SourceEvent("end", time.time(), "source failed", str(e)))
                return
            except SourceError as e:
                self._lost(str(e))
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            self.opens += 1
            self.splitter.reset()
            before = self.frames
            reason = self._pump(skip=self.frames if self.source.replays else 0)
            self.source.close()
            if self.stop.is_set():
                return
            if self.frames > before:
                backoff = RETRY_MIN_S
                replay_failures = 0
            if reason == "eof" and self.source.finished():
                self.slot.put_event(SourceEvent("end", time.time(), "end of stream"))
                return
            if reason == "eof" and not self.source.reopen:
                self.slot.put_event(SourceEvent("end", time.time(), "end of stream"))
                return
            if reason == "eof":
                err = getattr(self.source, "last_error", None)
                reason = err() if err else "the source closed the connection"
                if self.source.replays and self.frames == before:
                    replay_failures += 1
                    if replay_failures >= MAX_REPLAY_FAILURES:
                        self.slot.put_event(SourceEvent("end", time.time(), "source failed",
                                                        f"{self.source.name}: {reason}"))
                        return
            self._lost(reason)
            self.stop.wait(backoff)
            backoff = min(backoff * 2, self.retry_max_s)

    def _pump(self, skip: int) -> str:
        """Read until the source ends ("eof"), stalls or fails (the reason), or a stop request."""
        source, splitter = self.source, self.splitter
        last_data = time.monotonic()
        seen = 0  # frames of this opening, to skip the ones a replaying source already gave
        while not self.stop.is_set():
            try:
                data = source.read(READ_TIMEOUT_S)
            except FatalSourceError:
                raise
            except SourceError as e:
                return str(e)
            now = time.monotonic()
            if data is None:
                if self.stall_s > 0 and now - last_data > self.stall_s:
                    reason = f"{source.name}: no data for {self.stall_s:g} s"
                    if source.reopen:
                        return reason
                    self._lost(reason)  # stdin: wait on, the next bytes restore it
                continue
            if not data:
                return "eof"
            corrupt = splitter.stats.corrupt
            frames = splitter.feed(data)
            if splitter.stats.corrupt != corrupt and now - self._warned_at > 5:  # one line, not one per frame
                self._warned_at = now
                log.warning("%s: a frame skipped (%d so far): %s", source.name, splitter.stats.corrupt,
                            splitter.stats.last_error)
            for jpeg in frames:
                seen += 1
                if seen <= skip:
                    continue
                self._deliver(jpeg, now)
            last_data = time.monotonic()  # a lossless hand-over may have waited for the model
        return "stop"

    def _deliver(self, jpeg: bytes, mono: float) -> None:
        if self._lost_at is not None:
            self.slot.put_event(SourceEvent("restored", time.time(), f"after {mono - self._lost_at:.2f} s"))
            self._lost_at = None
        fps = self.source.fps
        media_s = self.frames / fps if (fps and not self.source.live) else None
        if self.slot.lossless:  # a file: its frame "arrives" when the model is ready for it
            self.slot.wait_taken(self.stop)
            mono = time.monotonic()
        self.slot.put_frame(Frame(self.frames, jpeg, time.time(), mono, media_s), self.stop)
        self.frames += 1
