"""Everything else through ffmpeg: a video file, /dev/videoN, rtsp://, or a URL that is not multipart
MJPEG. An ffmpeg child writes MJPEG to a pipe; ffmpeg is an optional system tool (``sudo apt install
-y ffmpeg``), never a Python dependency."""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from edge.live.sources import CHUNK, FatalSourceError, Source, wait_readable
from edge.text import printable

log = logging.getLogger(__name__)


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
        """How ffmpeg ended: killed by a signal, else its last stderr line, else its exit status."""
        rc = self.returncode
        if rc is not None and rc < 0:
            return f"ffmpeg killed by signal {-rc}"
        if self._stderr:
            return self._stderr[-1]
        return f"ffmpeg exited with status {rc}"

    def read(self, timeout: float) -> bytes | None:
        proc = self._proc
        if proc is None:
            return b""
        fd = proc.stdout.fileno()
        if not wait_readable(fd, timeout):
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
