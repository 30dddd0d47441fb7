"""Helpers for the datasets tests: tiny folders, images in every form, hostile files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A photo-like RGB image: smooth gradients, a few shapes, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], axis=-1)
    cy, cx = height * 0.5, width * 0.4
    disc = ((y - cy) ** 2 + (x - cx) ** 2) < (min(height, width) * 0.25) ** 2
    img[disc] = (220, 60, 40)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(arr_or_img, path: Path, fmt: str | None = None, **kw) -> Path:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def write_folder(root: Path, rows: list[tuple[str, str, tuple[str, ...]]], heads=("make", "type"),
                 size: int = 16, make_images: bool = True) -> Path:
    """A dataset folder: one small JPEG per row (coloured by its first label) and labels.csv."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(("image", "split", *heads))]
    for k, (image, split, labels) in enumerate(rows):
        if make_images and not image.startswith(("/", "..")):
            colour = (k * 37 % 255, k * 91 % 255, k * 53 % 255)
            save(Image.new("RGB", (size, size), colour), root / image, "JPEG")
        lines.append(",".join((image, split, *labels)))
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def small_rows(n_per_split: int = 2) -> list[tuple[str, str, tuple[str, ...]]]:
    """Rows over train/val/test/test_unseen with 2 makes x 2 types; B/suv only in test_unseen."""
    rows = []
    combos = [("A", "sedan"), ("A", "suv"), ("B", "sedan")]
    k = 0
    for split in ("train", "val", "test"):
        for i in range(n_per_split * len(combos)):
            rows.append((f"img/{k:03d}.jpg", split, combos[i % len(combos)]))
            k += 1
    rows.append((f"img/{k:03d}.jpg", "test_unseen", ("B", "suv")))
    return rows


def png_header(width: int, height: int, mode_byte: int = 0) -> bytes:
    """A syntactically valid PNG announcing ``width`` x ``height`` with a tiny IDAT: a bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()
