"""Known-answer tests for the Stanford Cars importer: every image's labels come from its own class.

The fixtures in test_datasets_stanford.py use one image and the same count for every class, so a
shifted class index (class c read as c+1) or a swapped train/test file would still pass there.
Here every class has its own image bytes and its own image count, the class of each file is known,
and each imported row is checked against it, in all three layouts (the devkit one with its
labelled test annotations inside ``devkit/`` and the nested ``cars_train/cars_train`` folders).
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_datasets_stanford import _cells, _struct  # the .mat writers of the layout fixtures

from datasets.folder import load_dataset
from datasets.stanford_cars import class_names, import_stanford_cars, parse_class_name

N_CLASSES = 196


def _train_count(c: int) -> int:
    """Unequal per-class counts (3..6), so a class shifted by one changes the counts."""
    return 3 + c % 4


def _test_count(c: int) -> int:
    return 1 + c % 2


def _image(c: int, k: int) -> bytes:
    """A JPEG unique to (class, index): the class sets the colour, the index a corner pixel block."""
    arr = np.zeros((16, 24, 3), dtype=np.uint8)
    arr[...] = (c, 255 - c, (c * 7) % 256)
    arr[:4, :4] = (k * 40) % 256
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    return buf.getvalue()


BOX = {"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 24, "bbox_y2": 16}


def write_devkit_nested(root: Path) -> dict[str, tuple[int, str]]:
    """Devkit layout, images in cars_train/cars_train and cars_test/cars_test, labelled test
    annotations inside devkit/. Returns {path relative to root: (class, 'train'|'test')}."""
    truth: dict[str, tuple[int, str]] = {}
    (root / "devkit").mkdir(parents=True)
    annos: dict[str, list[dict]] = {"train": [], "test": []}
    for split, count, folder in (("train", _train_count, "cars_train"), ("test", _test_count, "cars_test")):
        images = root / folder / folder
        images.mkdir(parents=True)
        for c in range(1, N_CLASSES + 1):
            for k in range(count(c)):
                fname = f"{len(annos[split]) + 1:05d}.jpg"
                (images / fname).write_bytes(_image(c, k if split == "train" else 10 + k))
                annos[split].append({**BOX, "class": np.uint8(c), "fname": fname})
                truth[f"{folder}/{folder}/{fname}"] = (c, split)
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": _cells(class_names())})
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _struct(annos["train"])})
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in annos["test"]]
    scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": _struct(unlabelled)})
    scipy.io.savemat(root / "devkit" / "cars_test_annos_withlabels.mat", {"annotations": _struct(annos["test"])})
    return truth


def write_all_in_one(root: Path) -> dict[str, tuple[int, str]]:
    truth: dict[str, tuple[int, str]] = {}
    (root / "car_ims").mkdir(parents=True)
    rows = []
    # Interleave classes in file order (as the real file does not group them) so an
    # off-by-one row offset cannot line up with a class boundary.
    for k in range(max(_train_count(c) + _test_count(c) for c in range(1, N_CLASSES + 1))):
        for c in range(N_CLASSES, 0, -1):
            if k >= _train_count(c) + _test_count(c):
                continue
            split = "test" if k >= _train_count(c) else "train"
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            (root / rel).write_bytes(_image(c, k))
            rows.append({"relative_im_path": rel, **BOX, "class": np.uint8(c), "test": np.uint8(split == "test")})
            truth[rel] = (c, split)
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": _struct(rows), "class_names": _cells(class_names())})
    return truth


def write_class_folders(root: Path) -> dict[str, tuple[int, str]]:
    truth: dict[str, tuple[int, str]] = {}
    for c, name in enumerate(class_names(), start=1):
        folder = name.replace("/", "-")
        for split, n in (("train", _train_count(c)), ("test", _test_count(c))):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                rel = f"{split}/{folder}/{k}.jpg"
                (root / rel).write_bytes(_image(c, k if split == "train" else 10 + k))
                truth[rel] = (c, split)
    return truth


WRITERS = {"devkit": write_devkit_nested, "all-in-one": write_all_in_one, "class-folders": write_class_folders}


@pytest.fixture(scope="module", params=sorted(WRITERS))
def imported(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"kat-{request.param}")
    truth = WRITERS[request.param](base / "root")
    import_stanford_cars(base / "root", base / "out", val_fraction=0.25, seed=3)
    return request.param, base / "root", truth, load_dataset(base / "out")


def test_every_row_has_its_own_class_labels(imported):
    layout, root, truth, ds = imported
    names = class_names()
    assert ds.heads == ("make", "type")
    seen = set()
    for r in ds.records:
        rel = r.path.relative_to(root.resolve()).as_posix()
        c, split = truth[rel]
        assert r.labels == parse_class_name(names[c - 1]), (layout, rel, c)
        # The published test split is the test split; train images become train or val.
        assert (r.split == "test") == (split == "test"), (layout, rel, r.split)
        seen.add(rel)
    assert seen == set(truth), f"{layout}: {len(set(truth) - seen)} image(s) left out"


def test_per_class_counts_follow_the_files(imported):
    layout, root, truth, ds = imported
    names = class_names()
    by_class = Counter()
    for r in ds.records:
        c, _ = truth[r.path.relative_to(root.resolve()).as_posix()]
        by_class[c] += 1
        assert r.labels == parse_class_name(names[c - 1])
    assert by_class == Counter({c: _train_count(c) + _test_count(c) for c in range(1, N_CLASSES + 1)})


def test_first_and_last_class_rows(imported):
    """Class 1 is AM General Hummer SUV 2000, class 196 smart fortwo Convertible 2012."""
    layout, root, truth, ds = imported
    first = {r.labels for r in ds.records if truth[r.path.relative_to(root.resolve()).as_posix()][0] == 1}
    last = {r.labels for r in ds.records if truth[r.path.relative_to(root.resolve()).as_posix()][0] == N_CLASSES}
    assert first == {("AM General", "SUV")}, layout
    assert last == {("smart", "Convertible")}, layout
    # ... and with the counts of those classes, not their neighbours'.
    assert sum(1 for r in ds.records if r.labels == ("smart", "Convertible")) == _train_count(196) + _test_count(196)


def test_copy_keeps_each_rows_own_bytes(tmp_path):
    truth = write_all_in_one(tmp_path / "root")
    import_stanford_cars(tmp_path / "root", tmp_path / "copied", copy=True)
    ds = load_dataset(tmp_path / "copied")
    originals = {(tmp_path / "root" / rel).read_bytes(): c for rel, (c, _) in truth.items()}
    assert len(originals) == len(truth)  # every fixture image is distinct
    names = class_names()
    for r in ds.records:
        c = originals[r.path.read_bytes()]
        assert r.labels == parse_class_name(names[c - 1]), r.image
