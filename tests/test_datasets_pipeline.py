"""The input pipeline: same pixels as the edge, every image form, hostile files skipped, tf.data."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from datasets_fixtures import jpeg_bytes, photo, png_header, save, small_rows, write_folder
from PIL import Image

from datasets.folder import DatasetError, load_dataset
from datasets.pipeline import load_split, open_split, verify
from edge.preprocess import load_image

H, W = 24, 32


def _folder_with(tmp_path, files: dict[str, bytes | Image.Image], split="train"):
    """A valid dataset (small_rows) plus extra train files given as bytes or Pillow images."""
    rows = small_rows()
    root = write_folder(tmp_path / "ds", rows)
    lines = (root / "labels.csv").read_text().splitlines()
    for k, (name, content) in enumerate(files.items()):
        path = root / "extra" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content.save(path)
        lines.append(f"extra/{name},{split},{'AB'[k % 2]},{('sedan', 'suv')[k % 2]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return load_dataset(root)


# -- same pixels as the edge ----------------------------------------------------------------------


def test_pipeline_pixels_equal_edge_preprocessing_on_real_files(tmp_path):
    files = {}
    for k, (h, w) in enumerate([(240, 320), (150, 100), (64, 64)]):
        arr = photo(h, w, seed=k)
        files[f"p{k}.jpg"] = jpeg_bytes(arr, quality=90)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        files[f"p{k}.png"] = buf.getvalue()
    ds = _folder_with(tmp_path, files)
    arrays = load_split(ds, "train", H, W, workers=2)
    assert arrays.images.shape == (len(ds.split("train")), H, W, 3) and arrays.images.dtype == np.uint8
    assert not arrays.skipped
    from train.data import eval_dataset

    streamed = open_split(ds, "train", H, W)  # decoded on the fly, a batch at a time
    tf_images = np.concatenate([x.numpy() for x in eval_dataset(streamed.images, None, 5)])
    assert tf_images.dtype == np.float32 and len(tf_images) == len(arrays)
    for i, path in enumerate(arrays.paths):
        edge = load_image(path, H, W)
        assert np.abs(arrays.images[i].astype(float) - edge).mean() < 1.0
        assert np.array_equal(tf_images[i], edge.astype(np.float32))
        if path.parent.name == "extra":
            # Independent reference: a full Pillow decode and bilinear resize. PNGs match exactly;
            # JPEGs are decoded DCT-scaled (draft) on both sides, which a full decode misses by
            # about 1.5 grey levels at most, so the bound there is 2.
            with Image.open(path) as img:
                ref = np.asarray(img.convert("RGB").resize((W, H), Image.Resampling.BILINEAR), dtype=float)
            bound = 2.0 if path.suffix == ".jpg" else 1e-9
            assert np.abs(edge - ref).mean() <= bound, path.name


def test_exif_rotated_jpeg_loads_upright(tmp_path):
    # Stored 40 wide x 20 high, left half red, right half blue, EXIF orientation 6 (rotate 90 CW).
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(arr, tmp_path / "rot.jpg", "JPEG", exif=exif, quality=95)
    out = load_image(path, 40, 20)  # upright it is 20 wide x 40 high: red on top, blue below
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60
    ds = _folder_with(tmp_path, {"rot.jpg": path.read_bytes()})
    arrays = load_split(ds, "train", 40, 20)
    assert np.array_equal(arrays.images[list(arrays.paths).index(ds.root / "extra/rot.jpg")], out)


def _palette(transparent: bool) -> Image.Image:
    img = Image.new("P", (16, 16), 1)
    img.putpalette([0, 255, 0] + [200, 30, 40] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 8, 16))  # left half palette index 0 (green, or transparent)
    if transparent:
        img.info["transparency"] = 0
    return img


def _cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name,make,expect_left,expect_right", [
    ("grey.png", lambda: Image.new("L", (16, 16), 100), (100, 100, 100), (100, 100, 100)),
    ("rgba.png", lambda: _half(Image.new("RGBA", (16, 16), (0, 0, 255, 255)), (255, 0, 0, 0)),
     (255, 255, 255), (0, 0, 255)),
    ("la.png", lambda: Image.new("LA", (16, 16), (0, 128)), (127, 127, 127), (127, 127, 127)),
    ("palette.png", lambda: _palette(False), (0, 255, 0), (200, 30, 40)),
    ("palette_t.png", lambda: _palette(True), (255, 255, 255), (200, 30, 40)),
    ("palette.gif", lambda: _palette(True), (255, 255, 255), (200, 30, 40)),
    ("cmyk.jpg", _cmyk_jpeg, (255, 0, 0), (255, 0, 0)),
    ("cmyk.tif", lambda: Image.new("CMYK", (16, 16), (255, 0, 0, 0)), (0, 255, 255), (0, 255, 255)),
    ("deep16.png", _png16, (128, 128, 128), (128, 128, 128)),
    ("bilevel.png", lambda: Image.new("1", (16, 16), 1), (255, 255, 255), (255, 255, 255)),
])
def test_image_modes_load_with_the_right_colours(tmp_path, name, make, expect_left, expect_right):
    content = make()
    ds = _folder_with(tmp_path, {name: content})
    arrays = load_split(ds, "train", 16, 16)
    assert not arrays.skipped
    img = arrays.images[list(arrays.paths).index(ds.root / "extra" / name)]
    assert np.abs(img[8, 2].astype(int) - expect_left).max() <= 6, img[8, 2]
    assert np.abs(img[8, 13].astype(int) - expect_right).max() <= 6, img[8, 13]


def _half(img: Image.Image, colour) -> Image.Image:
    img.paste(colour, (0, 0, img.width // 2, img.height))
    return img


# -- hostile and broken files ---------------------------------------------------------------------


def _hostile() -> dict[str, bytes]:
    good = jpeg_bytes(photo(64, 64))
    png = io.BytesIO()
    Image.fromarray(photo(32, 32)).save(png, "PNG")
    corrupt_png = bytearray(png.getvalue())
    corrupt_png[60:80] = b"\xff" * 20  # inside IDAT: a CRC and zlib failure
    return {
        "truncated.jpg": good[: len(good) // 2],
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n" * 10,
        "random.png": np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "header_only.jpg": good[:20],
        "corrupt.png": bytes(corrupt_png),
        "bomb.png": png_header(40_000, 40_000),  # 1.6 G pixels announced in 100 bytes
        "absurd.png": png_header(1, 2**31 - 1),
        "zero_width.png": png_header(0, 10),
        "html.png": b"<html><body>not an image</body></html>",
    }


def test_hostile_files_are_skipped_and_counted(tmp_path, caplog):
    files = _hostile()
    ds = _folder_with(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="datasets.pipeline"):
        arrays = load_split(ds, "train", H, W)
    skipped = {p.name for p, _ in arrays.skipped}
    assert skipped == set(files)
    assert len(arrays) == len(ds.split("train")) - len(files)
    assert all(len(e.splitlines()) == 1 and p.name in e for p, e in arrays.skipped)
    assert any("possible decompression bomb" in e for p, e in arrays.skipped if p.name == "bomb.png")
    assert f"skipped {len(files)} of {len(ds.split('train'))} images" in caplog.text
    assert len(arrays) == len(arrays.labels["make"]) == len(arrays.joint)
    # The streamed split drops the same rows, labels aligned, and its rows decode as the in-memory ones.
    streamed = verify(open_split(ds, "train", H, W), "train", ds.root)
    assert streamed.paths == arrays.paths and {p.name for p, _ in streamed.skipped} == set(files)
    assert np.array_equal(streamed.labels["make"], arrays.labels["make"])
    assert np.array_equal(streamed.images[np.arange(len(streamed))], arrays.images)


def test_every_pillow_mode_loads_or_is_skipped(tmp_path):
    files: dict[str, bytes] = {}
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "RGBX",
                 "RGBa", "La", "I;16", "I;16L", "I;16B", "I;16N"):
        img = Image.new(mode, (12, 10))
        for fmt in ("PNG", "TIFF", "WEBP", "JPEG", "BMP"):
            buf = io.BytesIO()
            try:
                img.save(buf, fmt)
            except (OSError, ValueError, KeyError):
                continue
            files[f"mode_{mode.replace(';', '_')}.{fmt.lower()}"] = buf.getvalue()
            break
    assert len(files) >= 18
    ds = _folder_with(tmp_path, files)
    arrays = load_split(ds, "train", 8, 8)
    assert len(arrays) + len(arrays.skipped) == len(ds.split("train"))
    loaded = {p.name for p in arrays.paths}
    for must in ("mode_1.png", "mode_L.png", "mode_P.png", "mode_RGBA.png", "mode_CMYK.tiff", "mode_I_16.png",
                 "mode_LA.png", "mode_I.tiff", "mode_F.tiff"):
        assert must in loaded, must


def test_all_unreadable_split_is_one_error(tmp_path):
    root = write_folder(tmp_path / "ds", small_rows())
    for r in load_dataset(root).split("val"):
        r.path.write_bytes(b"")
    ds = load_dataset(root)
    with pytest.raises(DatasetError, match="none of the 6 images of split 'val' could be decoded"):
        load_split(ds, "val", 8, 8)


# -- labels ---------------------------------------------------------------------------------------


def test_targets_and_joint(tmp_path):
    ds = load_dataset(write_folder(tmp_path / "ds", small_rows()))
    test = load_split(ds, "test_unseen", 8, 8)
    assert test.joint.tolist() == [-1] and test.labels["make"].tolist() == [1] and test.labels["type"].tolist() == [1]
    train = load_split(ds, "train", 8, 8)
    assert set(train.joint.tolist()) == {0, 1, 2} and train.labels["make"].dtype == np.int32
    # The joint target has no index for an unseen combination: such rows are not labelled for it.
    assert not test.labelled("joint").any() and train.labelled("joint").all()
    assert len(load_split(ds, "test_unseen", 8, 8)) == 1
    with pytest.raises(DatasetError, match="height must be a positive integer"):
        load_split(ds, "train", 0, 8)


def test_three_heads_flow_through(tmp_path):
    rows = [(img, split, (*lab, "red" if k % 2 else "blue")) for k, (img, split, lab) in enumerate(small_rows())]
    ds = load_dataset(write_folder(tmp_path / "ds", rows, heads=("make", "type", "colour")))
    train = load_split(ds, "train", 8, 8)
    assert list(train.labels) == ["make", "type", "colour"]
    y = train.targets(tuple(train.labels))
    assert sorted(y) == ["colour", "make", "type"]
    assert y["colour"].tolist() == train.labels["colour"].tolist()
