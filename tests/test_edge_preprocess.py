"""edge.runtime.preprocess.load_image: every Pillow mode, EXIF orientations, hostile files. No TensorFlow:
these also run under tflite-runtime 2.14 + numpy<2 (tests/test_edge_legacy.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge.runtime.preprocess import IMAGE_FORMATS, ImageError, load_image, open_image

H, W = 24, 32


def _save(img: Image.Image, path, fmt=None, **kw):
    img.save(path, format=fmt, **kw)
    return path


def _reopened_mode(path) -> str:
    with Image.open(path) as im:
        return im.mode


def _check(out, size=(H, W)):
    assert out.dtype == np.uint8 and out.shape == (*size, 3)


@pytest.mark.parametrize("mode, fmt, ext", [
    ("L", "PNG", "png"), ("L", "JPEG", "jpg"), ("LA", "PNG", "png"), ("P", "PNG", "png"),
    ("P", "GIF", "gif"), ("RGBA", "PNG", "png"), ("RGBA", "WEBP", "webp"), ("CMYK", "JPEG", "jpg"),
    ("CMYK", "TIFF", "tif"), ("1", "PNG", "png"), ("1", "BMP", "bmp"), ("RGB", "BMP", "bmp"),
    ("RGB", "PPM", "ppm"),
])
def test_every_mode_becomes_rgb(tmp_path, mode, fmt, ext):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    path = _save(img, tmp_path / f"x.{ext}", fmt)
    if fmt in ("PNG", "TIFF", "BMP"):
        assert _reopened_mode(path) == mode
    out = load_image(path, 16, 20)
    _check(out, (16, 20))
    same = load_image(path.read_bytes(), 16, 20)  # bytes in, same pixels out
    assert np.array_equal(out, same)


def test_alpha_is_composited_over_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., 0] = 255  # red, fully transparent in the left half, opaque in the right
    rgba[:, W // 2:, 3] = 255
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png")
    out = load_image(path, H, W)
    assert (out[:, : W // 2 - 2] == 255).all()  # white
    assert (out[:, W // 2 + 2:] == [255, 0, 0]).all()
    la = Image.fromarray(np.stack([np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8)], -1), "LA")
    assert (load_image(_save(la, tmp_path / "la.png"), H, W) == 255).all()  # transparent black -> white


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (W, H), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    p.paste(1, (0, 0, W // 2, H))  # left half green, right half index 0 (transparent black)
    path = tmp_path / "p.png"
    p.save(path, transparency=0)
    with Image.open(path) as im:
        assert im.mode == "P" and "transparency" in im.info
    out = load_image(path, H, W)
    assert (out[:, : W // 2 - 2] == [0, 255, 0]).all()
    assert (out[:, W // 2 + 2:] == 255).all()


def test_16_bit_is_scaled_to_8_bit(tmp_path):
    arr = np.full((H, W), 65535, np.uint16)
    arr[:, : W // 2] = 32768
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    assert _reopened_mode(path) == "I;16"
    out = load_image(path, H, W)
    assert (out[:, -1] == 255).all() and (abs(out[:, 0].astype(int) - 128) <= 1).all()


def test_32_bit_int_and_float(tmp_path):
    i32 = Image.fromarray(np.full((H, W), 1000, np.int32), "I")
    path = _save(i32, tmp_path / "i.tif")
    assert _reopened_mode(path) == "I"
    _check(load_image(path, H, W))
    f = Image.fromarray(np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W), "F")
    path = _save(f, tmp_path / "f.tif")
    assert _reopened_mode(path) == "F"
    out = load_image(path, H, W)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # 0..1 floats span the range
    nan = Image.fromarray(np.full((H, W), np.nan, np.float32), "F")
    _check(load_image(_save(nan, tmp_path / "nan.tif"), H, W))


# Orientation -> the transpose that stores an upright image so that the tag makes it upright again.
_STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
          7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, orientation, fmt):
    upright = np.zeros((40, 64, 3), np.uint8)  # landscape; red block top-left, blue bottom-right
    upright[:20, :32] = [255, 0, 0]
    upright[20:, 32:] = [0, 0, 255]
    img = Image.fromarray(upright)
    if _STORE[orientation] is not None:
        img = img.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    img.save(path, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    out = load_image(path, 40, 64).astype(int)
    assert out[5, 5, 0] > 200 and out[5, 5, 2] < 60  # red top-left
    assert out[35, 60, 2] > 200 and out[35, 60, 0] < 60  # blue bottom-right


def test_jpeg_draft_path_is_close_to_a_full_decode(tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:375, 0:500]
    arr = np.clip(128 + 60 * np.sin(xx[..., None] / 20 + rng.uniform(0, 6, 3)) + 40 * np.cos(yy[..., None] / 15),
                  0, 255).astype(np.uint8)
    path = _save(Image.fromarray(arr), tmp_path / "big.jpg", quality=92)
    fast = load_image(path, 64, 64).astype(int)  # draft decodes at 1/4 scale
    with Image.open(path) as im:
        full = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)).astype(int)
    assert np.abs(fast - full).mean() < 6


@pytest.mark.parametrize("data, match", [
    (b"", "not a recognised image"),
    (b"hello, I am text pretending to be a jpeg", "not a recognised image"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "corrupt|not a recognised"),
])
def test_broken_bytes_are_one_line_errors(tmp_path, data, match):
    path = tmp_path / "bad.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=match) as e:
        load_image(path, H, W)
    assert "\n" not in str(e.value) and "bad.jpg" in str(e.value)


def test_truncated_and_missing(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "t.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="t.png"):
        load_image(tmp_path / "t.png", H, W)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.jpg", H, W)
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path, H, W)


def test_decompression_bomb_and_absurd_dimensions_are_refused(tmp_path):
    # A 10000x10000 PNG of zeros is a few kB on disk and 300 MB decoded.
    big = Image.new("L", (10_000, 10_000))
    path = _save(big, tmp_path / "bomb.png")
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path, H, W)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path.read_bytes(), H, W, max_pixels=1_000_000)
    # A header claiming 65535x65535 with no data behind it.
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    data = bytearray(jpeg.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = b"\xff\xff\xff\xff"
    with pytest.raises(ImageError):
        load_image(bytes(data), H, W)
    # Extreme aspect ratios within the limit still load.
    _check(load_image(_save(Image.new("RGB", (4000, 1)), tmp_path / "line.png"), H, W))


def test_formats_outside_the_allow_list_are_refused(tmp_path):
    assert "EPS" not in IMAGE_FORMATS
    path = tmp_path / "x.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a recognised image"):
        load_image(path, H, W)
    ico = io.BytesIO()
    Image.new("RGB", (16, 16)).save(ico, "ICO")
    with pytest.raises(ImageError):
        open_image(ico.getvalue())
