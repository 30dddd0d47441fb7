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
from functools import cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge.errors import PolyheadError, first_line

MAX_IMAGE_PIXELS = 64_000_000
"""Images with more pixels than this are refused as possible decompression bombs."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
"""Pillow formats ``open_image`` will decode. Others (EPS runs Ghostscript, and the long tail of
rarely used decoders) are refused: the images are untrusted input. MPO is what some cameras' JPEGs
identify as."""

_RESAMPLE = Image.Resampling.BILINEAR


class ImageError(PolyheadError):
    """An image could not be loaded; the message names the file and the problem."""


_formats_cache: tuple[str, ...] = ()


def _allowed_formats() -> tuple[str, ...]:
    """IMAGE_FORMATS this Pillow has (MPO is its own plugin before Pillow 12, part of JPEG after).

    Only these plugins are imported: ``Image.init()`` would load every decoder Pillow ships."""
    global _formats_cache
    if not _formats_cache:
        import importlib

        for plugin in ("Jpeg", "Mpo", "Png", "Bmp", "Gif", "WebP", "Tiff", "Ppm"):
            try:
                importlib.import_module(f"PIL.{plugin}ImagePlugin")
            except ImportError:
                pass
        _formats_cache = tuple(f for f in IMAGE_FORMATS if f in Image.OPEN)
    return _formats_cache


@cache
def _jpeg_formats() -> tuple[str, ...]:
    """The allowed formats that take ``load_image``'s draft path (computed once, not per image)."""
    return tuple(f for f in _allowed_formats() if f in ("JPEG", "MPO"))


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
        finite = arr[np.isfinite(arr)]
        hi = 1.0 if finite.size and finite.max() <= 1.0 else 255.0  # 0..1 floats, else 0..255
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
            warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on broken files: the error says it
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=_allowed_formats()) as img:
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
    except Exception as e:
        # Untrusted bytes: Pillow reports truncated data, corrupt headers, bad EXIF and decoder
        # failures as OSError, SyntaxError, ValueError, struct.error, ZeroDivisionError and more.
        # Whatever it raises, this file is unreadable; the caller gets one line and goes on.
        msg = first_line(e, 200)
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(fp, formats=_jpeg_formats()) as probe:
                w, h = probe.size
                # Only plain, unrotated JPEGs take the draft path; everything else decodes in full below.
                orientation = probe.getexif().get(0x0112, 1)
                if orientation == 1 and probe.mode in ("RGB", "L") and 0 < w * h <= max_pixels:
                    probe.draft("RGB", (width, height))
                    probe.load()
                    return resize_rgb(_to_rgb(probe), height, width)
    except Exception:
        pass  # not a plain JPEG, or a broken one: the full decode below gives the one-line error
    img = open_image(source, max_pixels)
    try:
        return resize_rgb(img, height, width)
    except (OSError, ValueError, MemoryError) as e:
        raise ImageError(f"{name}: cannot resize ({e})") from None


def is_image_file(path: str | os.PathLike) -> bool:
    """True if ``path`` has a known image extension (content is checked only when loaded)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)
