"""Where live bytes come from: stdin (or any pipe), an HTTP ``multipart/x-mixed-replace`` MJPEG
camera read with a plain socket, and (edge/live/ffmpeg.py) everything else through an ffmpeg child.

Every source gives bytes, never pixels: frames are cut by ``edge.live.frames.JpegSplitter`` and
decoded by the same ``load_image`` as training. ``read`` waits at most ``timeout`` seconds, so the
reader can notice a stall or a stop request; a source never buffers more than one read.
"""

from __future__ import annotations

import base64
import logging
import os
import select
import socket
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


def wait_readable(fd: int, timeout: float) -> bool:
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
        if not wait_readable(self.fd, timeout):
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


def open_source(spec: str, realtime: bool = False) -> Source:
    """The source ``spec`` names: ``-`` (stdin), an http(s) URL (multipart MJPEG read directly, else
    ffmpeg), or a file, /dev/videoN or other URL (ffmpeg). A file that does not exist is a one-line
    FatalSourceError; ffmpeg's absence is one when the source is opened."""
    if spec == "-":
        return PipeSource(0, "stdin")
    scheme = urlsplit(spec).scheme.lower()
    if scheme in ("http", "https"):
        return HttpMjpegSource(spec)
    from edge.live.ffmpeg import FfmpegSource, ffmpeg_path

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
