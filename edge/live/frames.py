"""A bounded JPEG splitter: bytes of an MJPEG stream (concatenated JPEGs, a multipart body, a pipe
from rpicam-vid or ffmpeg) in, whole JPEG frames out.

It walks the JPEG marker structure (segment lengths, then the entropy-coded data after each SOS)
instead of searching for the end marker, so an EXIF thumbnail (a JPEG inside APP1) does not end a
frame early. Memory is bounded whatever arrives: bytes before a start-of-image marker are dropped
as they come (only the last byte is kept, in case it is half a marker), and a frame over
``max_frame_bytes`` or whose header declares more than ``max_pixels`` pixels is abandoned at once.
Frames that break the marker structure are skipped and counted, never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

SOI = b"\xff\xd8"
DEFAULT_MAX_FRAME_BYTES = 8 << 20
"""8 MiB: a 4K MJPEG frame at high quality is about 2 MB."""
DEFAULT_MAX_FRAME_PIXELS = 4096 * 4096

# Start-of-frame markers carry the image size (C4 DHT, C8 JPG and CC DAC are not frames).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 (SOI and EOI are handled on their own).
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


@dataclass
class SplitStats:
    """What the splitter has skipped so far."""

    frames: int = 0
    """Frames returned."""
    corrupt: int = 0
    """Frames abandoned: a broken marker structure, over the byte cap or over the pixel cap."""
    skipped_bytes: int = 0
    """Bytes outside any frame (multipart headers between frames are counted here too)."""
    last_error: str = ""
    """One line: why the last frame was abandoned."""


class JpegSplitter:
    """Feed it chunks; get back the complete JPEG frames they finish (see the module docstring)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 max_pixels: int = DEFAULT_MAX_FRAME_PIXELS):
        self.max_frame_bytes = max_frame_bytes
        self.max_pixels = max_pixels
        self.stats = SplitStats()
        self.reset()

    def reset(self) -> None:
        """Forget a partial frame (the source reconnected: its next bytes start afresh)."""
        self._buf = bytearray()
        self._in_frame = False
        self._pos = 0  # where parsing resumes inside the current frame
        self._entropy = False  # inside entropy-coded data (after an SOS header)
        self._skip_to = 0  # end of a segment being skipped, which may lie beyond the bytes we have

    def _abandon(self, why: str) -> None:
        self.stats.corrupt += 1
        self.stats.last_error = why
        # Resynchronise on the next start-of-image marker after this one's.
        rest = self._buf[2:]
        self._buf = bytearray()
        self._in_frame = False
        self._pos = self._skip_to = 0
        self._entropy = False
        self._seek_soi(rest)

    def _seek_soi(self, data: bytes | bytearray) -> None:
        """Drop bytes up to the next SOI; keep from there (or only a trailing 0xFF)."""
        i = data.find(SOI)
        if i < 0:
            keep = 1 if data[-1:] == b"\xff" else 0
            self.stats.skipped_bytes += len(data) - keep
            self._buf = bytearray(data[len(data) - keep:])
            return
        self.stats.skipped_bytes += i
        self._buf = bytearray(data[i:])
        self._in_frame = True
        self._pos = self._skip_to = 2
        self._entropy = False

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data`` (often none or one), in order."""
        frames: list[bytes] = []
        if not self._in_frame:
            self._seek_soi(self._buf + data)
        else:
            self._buf += data
        while self._in_frame:
            if len(self._buf) > self.max_frame_bytes:
                self._abandon(f"a frame over {self.max_frame_bytes} bytes without an end marker: skipped")
                continue
            end = self._parse()
            if end is None:
                break  # need more bytes
            if end < 0:
                continue  # abandoned; parse what follows
            frame = bytes(self._buf[:end])
            rest = self._buf[end:]
            self._buf = bytearray()
            self._in_frame = False
            self.stats.frames += 1
            frames.append(frame)
            self._seek_soi(rest)
        return frames

    def _parse(self) -> int | None:
        """Advance through the current frame: its length once its EOI is in the buffer, None when
        more bytes are needed, -1 when it was abandoned."""
        buf = self._buf
        n = len(buf)
        pos = max(self._pos, self._skip_to)
        while True:
            if self._entropy:
                # Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte) or RST0-7 inside it;
                # any other byte after 0xFF is the next marker.
                while True:
                    i = buf.find(b"\xff", pos)
                    if i < 0 or i + 1 >= n:
                        self._pos = n - 1 if i == n - 1 else n
                        return None
                    b = buf[i + 1]
                    if b == 0x00 or 0xD0 <= b <= 0xD7 or b == 0xFF:
                        pos = i + 1 if b == 0xFF else i + 2
                        continue
                    pos = i
                    self._entropy = False
                    break
            if pos + 2 > n:
                self._pos = pos
                return None
            if buf[pos] != 0xFF:
                self._abandon(f"no JPEG marker at byte {pos} of a frame: skipped")
                return -1
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill byte before a marker
                pos += 1
                continue
            if marker == 0xD9:  # EOI
                return pos + 2
            if marker == 0xD8:
                self._abandon("a new frame began before the last one ended: skipped")
                return -1
            if marker in _STANDALONE:
                pos += 2
                continue
            if pos + 4 > n:
                self._pos = pos
                return None
            length = (buf[pos + 2] << 8) | buf[pos + 3]
            if length < 2:
                self._abandon(f"JPEG segment length {length} at byte {pos}: skipped")
                return -1
            if marker in _SOF:
                if pos + 9 > n:
                    self._pos = pos
                    return None
                height = (buf[pos + 5] << 8) | buf[pos + 6]
                width = (buf[pos + 7] << 8) | buf[pos + 8]
                if width * height > self.max_pixels:
                    self._abandon(f"a {width}x{height} frame is over the limit of {self.max_pixels} pixels: skipped")
                    return -1
            end = pos + 2 + length
            if marker == 0xDA:
                self._entropy = True
            if end > n:
                self._skip_to = end  # the segment continues in bytes still to come
                self._pos = end
                return None
            pos = end
