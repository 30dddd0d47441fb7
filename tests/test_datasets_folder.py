"""The on-disk dataset form: loading, validation errors (one line, naming the culprit), check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasets_fixtures import save, small_rows, write_folder
from PIL import Image

from datasets.__main__ import main
from datasets.folder import DatasetError, check, load_dataset


def _rewrite(root: Path, text: str) -> None:
    (root / "labels.csv").write_text(text, encoding="utf-8")


def test_load_builds_records_and_schema(tmp_path):
    root = write_folder(tmp_path / "ds", small_rows())
    ds = load_dataset(root)
    assert ds.heads == ("make", "type")
    assert ds.schema.head("make").classes == ("A", "B")
    assert ds.schema.head("type").classes == ("sedan", "suv")
    # Combinations come from train only: B/suv lives in test_unseen.
    assert ds.schema.combinations == (("A", "sedan"), ("A", "suv"), ("B", "sedan"))
    assert ds.split_sizes == {"train": 6, "val": 6, "test": 6, "test_unseen": 1}
    rec = ds.split("test_unseen")[0]
    assert rec.labels == ("B", "suv") and rec.path == root / rec.image and rec.path.is_file()
    assert ds.schema.joint_index(rec.labels) == -1
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        ds.split("dev")


def test_three_heads_and_bom_and_column_order(tmp_path):
    root = tmp_path / "ds"
    rows = small_rows()
    write_folder(root, rows)
    lines = ["\ufeffmake,image,colour,split,type"]
    lines += [f"{lab[0]},{img},{'red' if k % 2 else 'blue'},{split},{lab[1]}" for k, (img, split, lab) in enumerate(rows)]
    _rewrite(root, "\n".join(lines) + "\n")
    ds = load_dataset(root)
    assert ds.heads == ("make", "colour", "type")
    assert ds.schema.head("colour").classes == ("blue", "red")


BAD = [
    ("image_col", "file,split,make,type\nimg/000.jpg,train,A,sedan\n", "missing column 'image'"),
    ("split_col", "image,make,type\nimg/000.jpg,A,sedan\n", "missing column 'split'"),
    ("all_unlabelled", "image,split,make,type\nimg/000.jpg,train,,\n", "no rows after the header with a label (1 rows"),
    ("blank_split", "image,split,make,type\nimg/000.jpg,,A,sedan\n", "row 2: blank split"),
    ("unknown_split", "image,split,make,type\nimg/000.jpg,training,A,sedan\n", "row 2: unknown split 'training'"),
    ("fields", "image,split,make,type\nimg/000.jpg,train,A\n", "row 2: 3 fields, the header has 4"),
    ("no_heads", "image,split\nimg/000.jpg,train\n", "no head columns"),
    ("dup_col", "image,split,make,make\nimg/000.jpg,train,A,A\n", "duplicate column 'make'"),
    ("missing_file", "image,split,make,type\nimg/nope.jpg,train,A,sedan\n", "row 2: image file 'img/nope.jpg' not found"),
    ("absolute", "image,split,make,type\n/etc/passwd,train,A,sedan\n", "row 2: absolute image path '/etc/passwd' refused"),
    ("windows_abs", "image,split,make,type\nC:\\x.jpg,train,A,sedan\n", "absolute image path"),
    ("escape", "image,split,make,type\nimg/../../x.jpg,train,A,sedan\n", "row 2: image path 'img/../../x.jpg' leaves the dataset folder"),
    ("dup_row", "image,split,make,type\nimg/000.jpg,train,A,sedan\nimg/000.jpg,val,A,sedan\n", "row 3: image 'img/000.jpg' is already listed at row 2"),
    ("empty", "", "empty file"),
    ("header_only", "image,split,make,type\n", "no rows after the header"),
]


@pytest.mark.parametrize("name,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_labels_csv_is_one_line_error(tmp_path, name, text, message):
    root = write_folder(tmp_path / "ds", small_rows())
    _rewrite(root, text)
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert message in msg
    assert "\n" not in msg and "labels.csv" in msg


def test_empty_split_and_single_class_head(tmp_path):
    rows = [r for r in small_rows() if r[1] != "val"]
    root = write_folder(tmp_path / "a", rows)
    with pytest.raises(DatasetError, match="split 'val' is empty"):
        load_dataset(root)
    rows = [(img, split, (lab[0], "sedan")) for img, split, lab in small_rows()]
    root = write_folder(tmp_path / "b", rows)
    with pytest.raises(DatasetError, match="head 'type' has only one class 'sedan'"):
        load_dataset(root)


def test_outside_paths_refused_unless_allowed(tmp_path):
    outside = save(Image.new("RGB", (8, 8), "red"), tmp_path / "elsewhere" / "x.jpg", "JPEG")
    rows = small_rows()
    rows[0] = ("../elsewhere/x.jpg", "train", rows[0][2])
    rows[1] = (str(outside), "train", rows[1][2])
    root = write_folder(tmp_path / "ds", rows)
    with pytest.raises(DatasetError, match="leaves the dataset folder .*--allow-outside-paths"):
        load_dataset(root)
    ds = load_dataset(root, allow_outside_paths=True)
    assert ds.records[0].path.resolve() == outside.resolve()
    assert ds.records[1].path == outside
    # The CLI refuses too, in one line, and accepts with the flag.
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "leaves the dataset folder" in result.output
    result = CliRunner().invoke(main, ["check", str(root), "--allow-outside-paths"])
    assert result.exit_code == 0, result.output


def test_image_root_from_dataset_json(tmp_path):
    external = write_folder(tmp_path / "external", small_rows())
    root = tmp_path / "ds"
    root.mkdir()
    (root / "labels.csv").write_text((external / "labels.csv").read_text())
    (root / "dataset.json").write_text(json.dumps({"source": "test", "image_root": str(external)}))
    ds = load_dataset(root)
    assert ds.image_root == external and ds.records[0].path == external / ds.records[0].image
    # Paths are still held inside the declared root.
    (root / "labels.csv").write_text("image,split,make,type\n../x.jpg,train,A,sedan\n")
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({"image_root": str(tmp_path / "nowhere")}))
    with pytest.raises(DatasetError, match="image_root .* is not a folder"):
        load_dataset(root)


def test_check_reports_counts_and_bad_files(tmp_path):
    root = write_folder(tmp_path / "ds", small_rows())
    (root / "img/000.jpg").unlink()
    (root / "img/001.jpg").write_bytes(b"not an image at all")
    report = check(root)
    assert report.missing == ("img/000.jpg",)
    assert [img for img, _ in report.unreadable] == ["img/001.jpg"]
    assert report.split_sizes["train"] == 6
    assert report.class_counts["make"]["A"]["train"] == 4
    assert report.combinations["B/suv"] == {"test_unseen": 1}
    assert not report.ok
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code == 1
    for text in ("missing files: 1", "unreadable files: 1", "head 'make': 2 classes", "never in train: B/suv"):
        assert text in result.output


def test_check_cli_clean_folder_and_errors(tmp_path):
    root = write_folder(tmp_path / "ds", small_rows())
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code == 0 and result.output.strip().endswith("OK")
    _rewrite(root, "image,split,make,type\nimg/000.jpg,train,A,\n")
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().startswith("Error:") and len(result.output.strip().splitlines()) == 1


def test_no_heavy_imports_at_import_time():
    import subprocess
    import sys

    code = ("import sys, datasets.__main__, datasets.folder, datasets.synth, datasets.stanford_cars, "
            "datasets.pipeline; print(sorted(m for m in ('tensorflow', 'scipy', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
