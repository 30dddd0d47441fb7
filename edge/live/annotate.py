"""Annotated frames: each head's smoothed top label and score drawn on the frame, as JPEG.

Pillow's default font only (no font file ships or is looked up): its scalable form where Pillow has
FreeType (10.1 and later), else its fixed bitmap font.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the bitmap font
        return ImageFont.load_default()


def top_label(result: Any) -> tuple[str, float] | None:
    """A head's shown (label, score): the smoothed top-1, else the raw one; None when neither."""
    if not isinstance(result, dict):
        return None
    for key in ("smoothed", "raw"):
        ranked = result.get(key)
        if ranked:
            label, score = ranked[0][0], ranked[0][1]
            try:
                return str(label), float(score)
            except (TypeError, ValueError):
                return str(label), float("nan")
    return None


def annotation_lines(record: dict[str, Any]) -> list[str]:
    """The text drawn on a frame: one ``head: label score`` line per head, then seq, age and fps."""
    lines = []
    for head, result in (record.get("heads") or {}).items():
        top = top_label(result)
        if top is not None:
            lines.append(f"{head}: {top[0]} {top[1]:.2f}")
    stats = []
    if record.get("seq") is not None:
        stats.append(f"#{record['seq']}")
    if isinstance(record.get("age_ms"), (int, float)):
        stats.append(f"age {record['age_ms']:.0f} ms")
    if isinstance(record.get("fps"), (int, float)):
        stats.append(f"{record['fps']:.1f} fps")
    if stats:
        lines.append("  ".join(stats))
    return lines


def annotate_jpeg(image: Image.Image, record: dict[str, Any], quality: int = 80) -> bytes:
    """``image`` with each head's smoothed top label and score drawn at its top-left, as JPEG bytes.

    The text sits on a dark band so it reads on any scene; its size follows the frame's height.
    ``image`` itself is not changed.
    """
    frame = image.convert("RGB") if image.mode != "RGB" else image.copy()
    lines = annotation_lines(record)
    if lines:
        size = max(10, frame.height // 24)
        font = _font(size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font knows Latin-1 only
            lines = [line.encode("latin-1", "replace").decode("latin-1") for line in lines]
        draw = ImageDraw.Draw(frame, "RGBA")
        pad = max(2, size // 4)
        boxes = [draw.textbbox((0, 0), line, font=font) for line in lines]
        line_h = max(b[3] - b[1] for b in boxes) + pad
        width = max(b[2] - b[0] for b in boxes) + 2 * pad
        draw.rectangle((0, 0, width, line_h * len(lines) + pad), fill=(0, 0, 0, 150))
        for i, line in enumerate(lines):
            draw.text((pad, pad + i * line_h), line, font=font, fill=(255, 255, 255, 255))
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=quality)
    return out.getvalue()
