"""Image loading: the one preprocessing function used by training and by the edge alike.

A file becomes an (height, width, 3) uint8 RGB array: EXIF orientation applied, any Pillow mode
converted to RGB (alpha composited over white, 16-bit scaled to 8-bit), resized with Pillow's
bilinear filter. Normalisation is *not* done here: it lives inside the model, so raw 0..255 pixels
are the model's input everywhere.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_IMAGE_PIXELS = 64_000_000
"""Images with more pixels than this are refused as possible decompression bombs."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_RESAMPLE = Image.Resampling.BILINEAR


class ImageError(ValueError):
    """An image could not be loaded; the message names the file and the problem."""


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit (or 32-bit integer) greyscale: scale the full range down to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        arr = np.clip(np.nan_to_num(arr) * (255.0 / hi) + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def open_image(source: str | os.PathLike | bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image as upright RGB; raise ImageError naming the file otherwise."""
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                w, h = img.size
                if w <= 0 or h <= 0:
                    raise ImageError(f"{name}: image has no pixels ({w}x{h})")
                if w * h > max_pixels:
                    raise ImageError(
                        f"{name}: {w}x{h} pixels is over the limit of {max_pixels} (possible decompression bomb)"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, IndexError, KeyError) as e:
        # Truncated data, corrupt headers and decoder failures surface as these in Pillow.
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{name}: corrupt or unreadable image ({msg})") from None


def resize_rgb(img: Image.Image, height: int, width: int) -> np.ndarray:
    """Resize an RGB Pillow image to (height, width) and return a uint8 (height, width, 3) array."""
    if img.size != (width, height):
        img = img.resize((width, height), _RESAMPLE)
    return np.asarray(img, dtype=np.uint8)


def load_image(
    source: str | os.PathLike | bytes,
    height: int,
    width: int,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Load an image file (or its bytes) as a (height, width, 3) uint8 RGB array.

    JPEGs are decoded with Pillow's draft mode straight to the smallest DCT scale that is still at
    least the target size, which makes large photos several times cheaper to decode. Training and
    the edge call this same function, so they see the same pixels.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings(), Image.open(fp) as probe:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            fmt = probe.format
            w, h = probe.size
            # Only plain, unrotated JPEGs take the draft path; everything else decodes in full below.
            orientation = probe.getexif().get(0x0112, 1) if fmt == "JPEG" else 1
            if fmt == "JPEG" and orientation == 1 and probe.mode in ("RGB", "L") and 0 < w * h <= max_pixels:
                probe.draft("RGB", (width, height))
                probe.load()
                return resize_rgb(_to_rgb(probe), height, width)
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, IndexError, KeyError,
            Image.DecompressionBombError):
        pass  # the full decode below produces the one-line error
    if isinstance(source, (bytes, bytearray)):
        img = open_image(source, max_pixels)
    else:
        img = open_image(Path(source), max_pixels)
    try:
        return resize_rgb(img, height, width)
    except (OSError, ValueError) as e:
        raise ImageError(f"{name}: cannot resize ({e})") from None


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has a known image extension (content is checked only when loaded)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
