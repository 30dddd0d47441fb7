"""Stanford Cars importer: name parsing on the real 196 names, fixtures in all three layouts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from PIL import Image

from datasets.__main__ import main
from datasets.folder import DatasetError, load_dataset
from datasets.stanford_cars import (
    EXPLICIT_TYPES,
    class_names,
    detect_layout,
    import_stanford_cars,
    parse_class_name,
    parse_merge_makes,
)
from datasets.synth import TYPES

# The team's copy of the 196 names sits beside the checkout (../shared), in CI too.
SHARED_NAMES = Path(__file__).resolve().parents[2] / "shared" / "data" / "stanford_cars_class_names.txt"
TRAIN_PER_CLASS = 3
BBOX = (3, 2, 14, 10)  # 1-based inclusive: a 12 x 9 crop


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _struct(rows: list[dict]) -> np.ndarray:
    fields = list(rows[0])
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row[f]
    return arr


def _cells(names) -> np.ndarray:
    return np.array(list(names), dtype=object).reshape(1, -1)


def _box() -> dict:
    return dict(zip(("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"), BBOX, strict=True))


def write_devkit(root: Path, test_labels: bool = True) -> Path:
    data = _jpeg()
    (root / "devkit").mkdir(parents=True)
    (root / "cars_train").mkdir()
    (root / "cars_test").mkdir()
    train, test = [], []
    for c in range(1, 197):
        for _ in range(TRAIN_PER_CLASS):
            fname = f"{len(train) + 1:05d}.jpg"
            (root / "cars_train" / fname).write_bytes(data)
            train.append({**_box(), "class": np.uint8(c), "fname": fname})
        fname = f"{len(test) + 1:05d}.jpg"
        (root / "cars_test" / fname).write_bytes(data)
        test.append({**_box(), "class": np.uint8(c), "fname": fname})
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": _cells(class_names())})
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": _struct(train)})
    # The devkit's own test annotations lack `class`; the separately published file has it.
    unlabelled = [{k: v for k, v in r.items() if k != "class"} for r in test]
    scipy.io.savemat(root / "devkit" / "cars_test_annos.mat", {"annotations": _struct(unlabelled)})
    if test_labels:
        scipy.io.savemat(root / "cars_test_annos_withlabels.mat", {"annotations": _struct(test)})
    return root


def write_all_in_one(root: Path) -> Path:
    data = _jpeg()
    (root / "car_ims").mkdir(parents=True)
    rows = []
    for c in range(1, 197):
        for k in range(TRAIN_PER_CLASS + 1):
            rel = f"car_ims/{len(rows) + 1:06d}.jpg"
            (root / rel).write_bytes(data)
            rows.append({"relative_im_path": rel, **_box(), "class": np.uint8(c), "test": np.uint8(k == 0)})
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": _struct(rows), "class_names": _cells(class_names())})
    return root


def write_class_folders(root: Path) -> Path:
    data = _jpeg()
    for name in class_names():
        folder = name.replace("/", "-")
        for split, n in (("train", TRAIN_PER_CLASS), ("test", 1)):
            (root / split / folder).mkdir(parents=True)
            for k in range(n):
                (root / split / folder / f"{k}.jpg").write_bytes(data)
    return root


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stanford")
    return {
        "devkit": write_devkit(base / "devkit_root"),
        "all-in-one": write_all_in_one(base / "aio_root"),
        "class-folders": write_class_folders(base / "folders_root"),
    }


# -- names ----------------------------------------------------------------------------------------


def test_packaged_names_are_the_shared_196():
    assert len(class_names()) == 196
    if not SHARED_NAMES.exists():
        pytest.skip(f"{SHARED_NAMES} is absent here: the packaged names are not compared with the shared copy")
    assert class_names() == tuple(SHARED_NAMES.read_text().split("\n")[:196])


def test_real_names_give_49_makes_8_types():
    parsed = [parse_class_name(n) for n in class_names()]
    assert len({m for m, _ in parsed}) == 49
    assert {t for _, t in parsed} == set(TYPES)
    assert len(set(parsed)) == 105
    merged = [parse_class_name(n, {"AM General": "HUMMER"}) for n in class_names()]
    assert len({m for m, _ in merged}) == 48
    assert all(name in class_names() for name in EXPLICIT_TYPES)


@pytest.mark.parametrize("name,expected", [
    ("AM General Hummer SUV 2000", ("AM General", "SUV")),
    ("Aston Martin V8 Vantage Convertible 2012", ("Aston Martin", "Convertible")),
    ("Land Rover LR2 SUV 2012", ("Land Rover", "SUV")),
    ("Mercedes-Benz Sprinter Van 2012", ("Mercedes-Benz", "Van")),
    ("Dodge Caravan Minivan 1997", ("Dodge", "Van")),
    ("Ford Ranger SuperCab 2011", ("Ford", "Pickup")),
    ("Dodge Dakota Club Cab 2007", ("Dodge", "Pickup")),
    ("Chevrolet Silverado 1500 Classic Extended Cab 2007", ("Chevrolet", "Pickup")),
    ("Ram C/V Cargo Van Minivan 2012", ("Ram", "Van")),
    ("Chevrolet Corvette ZR1 2012", ("Chevrolet", "Coupe")),
    ("smart fortwo Convertible 2012", ("smart", "Convertible")),
])
def test_parse_class_name(name, expected):
    assert parse_class_name(name) == expected


def test_unknown_name_and_merge_spec():
    with pytest.raises(DatasetError, match="'Foo Bar 2012' has no body word"):
        parse_class_name("Foo Bar 2012")
    assert parse_merge_makes(["AM General=HUMMER", "A=B, C = D"]) == {"AM General": "HUMMER", "A": "B", "C": "D"}
    with pytest.raises(DatasetError, match="FROM=TO"):
        parse_merge_makes(["AM General"])


# -- layouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["devkit", "all-in-one", "class-folders"])
def test_import_each_layout_in_place(layouts, tmp_path, layout):
    root = layouts[layout]
    assert detect_layout(root) == layout
    summary = import_stanford_cars(root, tmp_path / "out", merge_makes={"AM General": "HUMMER"}, val_fraction=0.34)
    assert summary.layout == layout and summary.images_in_place
    assert len(summary.makes) == 48 and len(summary.types) == 8
    assert summary.split_sizes == {"train": 196 * 2, "val": 196, "test": 196}
    # Images stay under ROOT: labels.csv paths are relative to it, dataset.json says where it is.
    ds = load_dataset(tmp_path / "out")
    assert ds.image_root == root.resolve()
    assert all(r.path.is_file() and root.resolve() in r.path.parents for r in ds.records)
    assert len(ds.schema.head("make").classes) == 48 and len(ds.schema.head("type").classes) == 8
    if layout == "class-folders":
        assert any("Ram C-V Cargo Van Minivan 2012" in r.image for r in ds.records)


def test_devkit_without_test_labels_leaves_test_images_out(tmp_path):
    root = write_devkit(tmp_path / "root", test_labels=False)
    summary = import_stanford_cars(root, tmp_path / "out", val_fraction=0.34)
    assert any("196 test images" in n and "left out" in n for n in summary.notes)
    # Test is then taken from train, like val; no image of cars_test/ is used.
    assert summary.split_sizes == {"train": 196, "val": 196, "test": 196}
    ds = load_dataset(tmp_path / "out")
    assert not any("cars_test/" in r.image for r in ds.records)
    assert len(ds.schema.head("make").classes) == 49


def test_copy_and_crop(layouts, tmp_path):
    root = layouts["all-in-one"]
    import_stanford_cars(root, tmp_path / "copied", copy=True)
    ds = load_dataset(tmp_path / "copied")
    assert ds.image_root == tmp_path / "copied" and ds.records[0].path.read_bytes() == (root / "car_ims/000001.jpg").read_bytes()
    import_stanford_cars(root, tmp_path / "cropped", crop_bbox=True)
    ds = load_dataset(tmp_path / "cropped")
    with Image.open(ds.records[0].path) as img:
        assert img.size == (BBOX[2] - BBOX[0] + 1, BBOX[3] - BBOX[1] + 1)
    with pytest.raises(DatasetError, match="--crop-bbox needs bounding boxes"):
        import_stanford_cars(layouts["class-folders"], tmp_path / "x", crop_bbox=True)


def test_errors_and_cli(layouts, tmp_path):
    with pytest.raises(DatasetError, match="'Tata' is not a make in the data"):
        import_stanford_cars(layouts["devkit"], tmp_path / "o", merge_makes={"Tata": "X"})
    with pytest.raises(DatasetError, match="no Stanford Cars layout"):
        import_stanford_cars(tmp_path, tmp_path / "o2")
    bad = tmp_path / "bad"
    (bad / "train" / "Not A Car 2012").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a Stanford Cars class name"):
        import_stanford_cars(bad, tmp_path / "o3")
    result = CliRunner().invoke(main, ["stanford-cars", str(layouts["devkit"]), "--out", str(tmp_path / "cli"),
                                       "--merge-makes", "AM General=HUMMER"])
    assert result.exit_code == 0, result.output
    assert "48 makes, 8 types" in result.output and "105 make/type combinations" in result.output
    assert "Aston Martin: Convertible, Coupe" in result.output
    result = CliRunner().invoke(main, ["stanford-cars", str(layouts["devkit"]), "--out", str(tmp_path / "cli2"),
                                       "--merge-makes", "Nope=HUMMER"])
    assert result.exit_code == 1 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
