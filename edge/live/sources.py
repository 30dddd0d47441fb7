"""Where live bytes come from: stdin (or any pipe), an HTTP ``multipart/x-mixed-replace`` MJPEG
camera read with a plain socket, and everything else through an ffmpeg child that emits MJPEG.

Every source gives bytes, never pixels: frames are cut by ``edge.live.frames.JpegSplitter`` and
decoded by the same ``load_image`` as training. ``read`` waits at most ``timeout`` seconds, so the
reader can notice a stall or a stop request; a source never buffers more than one read.
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge.errors import PolyheadError, first_line
from edge.text import printable

log = logging.getLogger(__name__)

CHUNK = 1 << 16
MAX_HEADER_BYTES = 1 << 16
CONNECT_TIMEOUT_S = 5.0


class SourceError(PolyheadError):
    """A source cannot be opened or read (one line naming it); a live source is retried."""


class FatalSourceError(SourceError):
    """A source that retrying cannot fix: no ffmpeg, no such file, a video ffmpeg cannot read."""


class NotMjpeg(SourceError):
    """An http(s) URL that answers with something other than multipart MJPEG (ffmpeg reads it)."""


class Source:
    """One live or recorded byte stream (see the module docstring)."""

    name: str = ""
    live: bool = True
    """Frames may be dropped (latest-frame policy). False: every frame runs, in order."""
    reopen: bool = True
    """A lost source is closed and opened again; False: it is only waited for (stdin)."""
    replays: bool = False
    """Reopening starts again from the first frame (a file): the frames already seen are skipped."""
    fps: float | None = None
    """The media frame rate, for a source whose frames do not arrive in real time."""

    def open(self) -> None:
        """Connect or start; raise SourceError (retried) or FatalSourceError (not retried)."""

    def read(self, timeout: float) -> bytes | None:
        """Up to CHUNK bytes; None when nothing came within ``timeout``; b"" at the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect; reap any child. Safe to call twice."""

    def finished(self) -> bool:
        """After b"": the stream truly ended (a file read to its end) rather than was lost."""
        return not self.reopen


def _wait_readable(fd: int, timeout: float) -> bool:
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    except InterruptedError:
        return False
    return bool(ready)


class PipeSource(Source):
    """A pipe or file descriptor (stdin: ``-``): rpicam-vid, ffmpeg or any writer of JPEGs."""

    reopen = False

    def __init__(self, fd: int = 0, name: str = "stdin"):
        import stat

        self.fd = fd
        self.name = name
        try:
            # A regular file redirected in (``< clip.mjpeg``) is a recording: every frame runs, like a video file.
            self.live = not stat.S_ISREG(os.fstat(fd).st_mode)
        except OSError:
            pass

    def read(self, timeout: float) -> bytes | None:
        if not _wait_readable(self.fd, timeout):
            return None
        try:
            return os.read(self.fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError as e:
            raise FatalSourceError(f"{self.name}: cannot read ({e.strerror or e})") from None


class HttpMjpegSource(Source):
    """An HTTP(S) MJPEG camera (``multipart/x-mixed-replace``), read with a plain socket so that a
    read can wait with a timeout and keep the connection (urllib's file objects die on the first
    timeout). HTTP/1.0 is asked for, so the body is never chunked. User and password in the URL
    become a Basic Authorization header."""

    def __init__(self, url: str):
        self.url = url
        parts = urlsplit(url)
        # The name goes into logs and records: never the password.
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        self.name = printable(parts._replace(netloc=host).geturl() if parts.username is not None else url)
        self._parts = parts
        self._sock: socket.socket | None = None
        self._pending = b""

    def open(self) -> None:
        p = self._parts
        port = p.port or (443 if p.scheme == "https" else 80)
        try:
            sock = socket.create_connection((p.hostname, port), timeout=CONNECT_TIMEOUT_S)
            if p.scheme == "https":
                import ssl

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=p.hostname)
            path = (p.path or "/") + (f"?{p.query}" if p.query else "")
            lines = [f"GET {path} HTTP/1.0", f"Host: {p.hostname}:{port}", "User-Agent: polyhead-edge",
                     "Accept: multipart/x-mixed-replace, */*"]
            if p.username is not None:
                token = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
                lines.append(f"Authorization: Basic {token}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = b""
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while b"\r\n\r\n" not in head:
                if len(head) > MAX_HEADER_BYTES or time.monotonic() > deadline:
                    raise SourceError(f"{self.name}: no HTTP header within {MAX_HEADER_BYTES} bytes or "
                                      f"{CONNECT_TIMEOUT_S:g} s")
                data = sock.recv(CHUNK)
                if not data:
                    raise SourceError(f"{self.name}: connection closed before the HTTP header ended")
                head += data
        except SourceError:
            self._close_sock(locals().get("sock"))
            raise
        except OSError as e:
            self._close_sock(locals().get("sock"))
            raise SourceError(f"{self.name}: {e.strerror or first_line(e)}") from None
        header, _, body = head.partition(b"\r\n\r\n")
        status_line, *fields = header.decode("latin-1").split("\r\n")
        status = status_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        if len(status) >= 2 and status[1] in ("301", "302", "303", "307", "308"):
            sock.close()  # ffmpeg follows redirects
            raise NotMjpeg(f"{self.name}: redirected ({printable(status_line[:100])})")
        if len(status) < 2 or status[1] != "200":
            sock.close()
            raise SourceError(f"{self.name}: HTTP answered {printable(status_line[:100])!r}")
        ctype = headers.get("content-type", "").lower()
        if not ctype.startswith("multipart/") or "chunked" in headers.get("transfer-encoding", "").lower():
            sock.close()  # chunk sizes would land inside the JPEGs: ffmpeg reads that
            raise NotMjpeg(f"{self.name}: content type {printable(ctype[:80]) or 'none'}, not plain multipart MJPEG")
        self._sock = sock
        self._pending = body

    @staticmethod
    def _close_sock(sock) -> None:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def read(self, timeout: float) -> bytes | None:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        if self._sock is None:
            return b""
        try:
            self._sock.settimeout(max(0.01, timeout))
            return self._sock.recv(CHUNK)
        except TimeoutError:
            return None
        except OSError as e:
            raise SourceError(f"{self.name}: {e.strerror or first_line(e)}") from None

    def close(self) -> None:
        self._close_sock(self._sock)
        self._sock = None
        self._pending = b""


def ffmpeg_path() -> str:
    """The ffmpeg executable; a one-line FatalSourceError naming the apt package when there is none."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise FatalSourceError("this source needs ffmpeg, which is not installed (sudo apt install -y ffmpeg); "
                               "or pipe JPEGs into 'polyhead-edge live MODELS -'")
    return path


def probe_video(path: str) -> tuple[str, float | None]:
    """(codec name, frame rate) of a file's first video stream, from ffprobe; ("", None) unknown."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return "", None
    try:
        out = subprocess.run([ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "stream=codec_name,avg_frame_rate", "-of", "default=noprint_wrappers=1", "--", path],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "", None
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    fps = None
    m = re.fullmatch(r"(\d+)/(\d+)", fields.get("avg_frame_rate", ""))
    if m and int(m.group(2)) and int(m.group(1)):
        fps = int(m.group(1)) / int(m.group(2))
    return fields.get("codec_name", ""), fps


class FfmpegSource(Source):
    """A video file, /dev/videoN, rtsp:// or another URL, through an ffmpeg child writing MJPEG to a
    pipe. An MJPEG file is copied (no re-encode: the model sees the file's own JPEGs); anything else
    is encoded at JPEG quality 2. A file runs frame by frame unless ``realtime`` (ffmpeg ``-re``, and
    then frames drop like a camera's); a child that dies is started again."""

    def __init__(self, spec: str, realtime: bool = False, quality: int = 2):
        self.spec = spec
        self.name = printable(spec)
        self.is_file = Path(spec).is_file()
        self.live = not self.is_file or realtime
        self.replays = self.is_file
        self.realtime = realtime
        self.quality = quality
        self.codec, self.fps = probe_video(spec) if self.is_file else ("", None)
        self._proc: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.returncode: int | None = None

    def command(self) -> list[str]:
        """The ffmpeg command line for this source."""
        cmd = [ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error"]
        if self.is_file and self.realtime:
            cmd.append("-re")
        if self.spec.startswith("/dev/video"):
            cmd += ["-f", "v4l2"]
        elif self.spec.startswith(("rtsp://", "rtsps://")):
            cmd += ["-rtsp_transport", "tcp", "-fflags", "nobuffer", "-flags", "low_delay"]
        elif not self.is_file:
            cmd += ["-fflags", "nobuffer"]
        cmd += ["-i", self.spec, "-map", "0:v:0", "-an", "-sn"]
        cmd += ["-c:v", "copy"] if self.codec == "mjpeg" else ["-c:v", "mjpeg", "-q:v", str(self.quality)]
        return cmd + ["-f", "mjpeg", "-"]

    def open(self) -> None:
        self.returncode = None
        cmd = self.command()
        try:
            # Its own process group: a Ctrl-C on the terminal reaches polyhead-edge, which then stops
            # and reaps the child itself (a child killed first would look like a lost source).
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise FatalSourceError(f"cannot start ffmpeg for {self.name}: {e.strerror or e}") from None
        self._stderr.clear()
        threading.Thread(target=self._drain_stderr, args=(self._proc.stderr, self._stderr),
                         name="polyhead-ffmpeg-stderr", daemon=True).start()
        log.debug("started %s", " ".join(cmd))

    @staticmethod
    def _drain_stderr(stream, lines: collections.deque) -> None:
        """Keep ffmpeg's last stderr lines (bounded): a full stderr pipe would block the child."""
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").strip()
                if text:
                    lines.append(printable(text[:300]))
        except (OSError, ValueError):
            pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def last_error(self) -> str:
        """ffmpeg's last stderr line, or how it ended."""
        if self._stderr:
            return self._stderr[-1]
        rc = self.returncode
        if rc is not None and rc < 0:
            return f"ffmpeg killed by signal {-rc}"
        return f"ffmpeg exited with status {rc}"

    def read(self, timeout: float) -> bytes | None:
        proc = self._proc
        if proc is None:
            return b""
        fd = proc.stdout.fileno()
        if not _wait_readable(fd, timeout):
            return None
        data = os.read(fd, CHUNK)
        if not data:
            try:
                self.returncode = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.close()
        return data

    def finished(self) -> bool:
        return self.is_file and self.returncode == 0

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.returncode = proc.returncode
        for stream in (proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass


def open_source(spec: str, realtime: bool = False) -> Source:
    """The source ``spec`` names: ``-`` (stdin), an http(s) URL (multipart MJPEG read directly, else
    ffmpeg), or a file, /dev/videoN or other URL (ffmpeg). A file that does not exist is a one-line
    FatalSourceError; ffmpeg's absence is one when the source is opened."""
    if spec == "-":
        return PipeSource(0, "stdin")
    scheme = urlsplit(spec).scheme.lower()
    if scheme in ("http", "https"):
        return HttpMjpegSource(spec)
    if scheme or spec.startswith("/dev/"):
        ffmpeg_path()  # no ffmpeg: say so now, before anything starts
        return FfmpegSource(spec, realtime)
    path = Path(spec)
    if not path.exists():
        raise FatalSourceError(f"{printable(spec)}: no such file (a source is -, a video file, /dev/videoN "
                               "or a URL)")
    if path.is_dir():
        raise FatalSourceError(f"{printable(spec)}: is a folder; use 'polyhead-edge predict' for images")
    ffmpeg_path()
    return FfmpegSource(spec, realtime)
