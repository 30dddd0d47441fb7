"""Live sources for the tests of ``polyhead-edge live``: JPEG frames, an HTTP MJPEG camera on
127.0.0.1 that can go away and come back, a fake ``rpicam-vid``, a paced JPEG writer, and an MJPEG
video made by copying JPEGs (nothing re-encoded).

As a script, the writer: ``python tests/live_fixtures.py write --fps 30 --count 300 --log sent.csv``
writes JPEGs to stdout at a known rate and logs ``seq,unix_time`` as it sends each one (a source of
known timing for benchmarks).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def jpeg_frames(n: int, size: tuple[int, int] = (64, 48), seed: int = 0, quality: int = 85) -> list[bytes]:
    """``n`` different JPEGs (width, height ``size``): noise over a colour that changes frame to frame,
    so the fixture models' labels change too."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.normal(0, 40 + 20 * (i % 3), (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=quality)
        frames.append(buf.getvalue())
    return frames


def write_frames(folder: Path, frames: list[bytes]) -> list[Path]:
    """The frames as folder/f000.jpg, f001.jpg ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, jpeg in enumerate(frames):
        p = folder / f"f{i:03d}.jpg"
        p.write_bytes(jpeg)
        paths.append(p)
    return paths


def mjpeg_video(frames_dir: Path, out: Path, fps: int = 10) -> Path:
    """An MJPEG .avi whose frames are the folder's JPEGs, copied byte for byte (no re-encode)."""
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-framerate", str(fps), "-i",
                    str(frames_dir / "f%03d.jpg"), "-c:v", "copy", str(out)], check=True, timeout=60)
    return out


REQUIRE_FFMPEG_ENV = "POLYHEAD_REQUIRE_FFMPEG"


def need_ffmpeg() -> None:
    """Skip, saying why, without ffmpeg; fail instead under POLYHEAD_REQUIRE_FFMPEG=1 (``make test``)."""
    import pytest

    if shutil.which("ffmpeg") is None:
        why = "ffmpeg is not installed (apt-get install -y ffmpeg)"
        if os.environ.get(REQUIRE_FFMPEG_ENV) == "1":
            pytest.fail(f"{REQUIRE_FFMPEG_ENV}=1 but {why}")
        pytest.skip(why)


class MjpegServer:
    """An HTTP ``multipart/x-mixed-replace`` MJPEG camera on 127.0.0.1 sending ``frames`` in a loop at
    ``fps``. ``stop()`` closes it and every connection; ``start()`` brings it back on the same port."""

    def __init__(self, frames: list[bytes], fps: float = 20.0):
        self.frames = frames
        self.fps = fps
        self.port = 0
        self.sent = 0
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        owner = self
        stopping = self._stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not stopping.is_set():
                        jpeg = owner.frames[i % len(owner.frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                         % (len(jpeg), jpeg))
                        owner.sent += 1
                        i += 1
                        stopping.wait(1 / owner.fps)
                except OSError:
                    pass

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


FAKE_RPICAM_VID = """#!/bin/sh
# A stand-in for Raspberry Pi OS's rpicam-vid: checks that it is asked for MJPEG on stdout, then
# writes the JPEGs of FRAMES (every file, in name order) as one stream, one every PERIOD seconds.
case " $* " in *" --codec mjpeg "*) ;; *) echo "fake rpicam-vid: expected --codec mjpeg" >&2; exit 2;; esac
case " $* " in *" -o - "*) ;; *) echo "fake rpicam-vid: expected -o -" >&2; exit 2;; esac
for f in {frames}/*.jpg; do cat "$f"; sleep {period}; done
"""


def fake_rpicam_vid(bin_dir: Path, frames_dir: str, period: float = 0.05) -> Path:
    """Write a fake ``rpicam-vid`` into ``bin_dir`` (put it first on PATH); returns its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "rpicam-vid"
    script.write_text(FAKE_RPICAM_VID.format(frames=frames_dir, period=period))
    script.chmod(0o755)
    return script


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def write_paced(out, frames: list[bytes], fps: float, count: int, log=None) -> None:
    """Write ``count`` frames (cycling) to the binary stream ``out`` at ``fps``, on a fixed schedule
    (a late frame does not push the rest back); log ``seq,unix_time`` per frame sent to ``log``."""
    start = time.monotonic()
    for seq in range(count):
        delay = start + seq / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        out.write(frames[seq % len(frames)])
        out.flush()
        if log is not None:
            log.write(f"{seq},{time.time():.6f}\n")


if __name__ == "__main__":
    import click

    @click.group()
    def cli() -> None:
        """Live test sources."""

    @cli.command()
    @click.option("--fps", default=30.0, show_default=True)
    @click.option("--count", default=300, show_default=True)
    @click.option("--size", default="640x480", show_default=True, help="WIDTHxHEIGHT of the JPEGs.")
    @click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="seq,unix_time per frame.")
    def write(fps: float, count: int, size: str, log_path: str | None) -> None:
        """Write JPEGs to stdout at FPS."""
        w, h = (int(x) for x in size.split("x"))
        frames = jpeg_frames(16, (w, h))
        log = open(log_path, "w") if log_path else None  # noqa: SIM115
        try:
            write_paced(sys.stdout.buffer, frames, fps, count, log)
        except BrokenPipeError:
            os._exit(0)
        finally:
            if log:
                log.close()

    cli()
