"""The one labels.csv reader: a file that passes ``datasets check`` is read the same on the device."""

from __future__ import annotations

import pytest
from datasets_fixtures import small_rows, write_folder

from datasets.folder import DatasetError, check, load_dataset
from edge.labels import read_labels_csv
from edge.labelsfile import LabelsFileError, read_labels_file


def _reorder(root, order):
    """Rewrite root/labels.csv with its columns in ``order`` (names), a BOM, padded cells and blank rows."""
    lines = (root / "labels.csv").read_text().splitlines()
    header = lines[0].split(",")
    out = []
    for line in lines:
        cells = dict(zip(header, line.split(","), strict=True))
        out.append(",".join(f" {cells[c]} " if line is not lines[0] else cells[c] for c in order))
        out.append(" , , , ")  # blank rows are skipped by every reader
    (root / "labels.csv").write_text("\ufeff" + "\n".join(out) + "\n", encoding="utf-8")


def test_columns_in_any_order_read_the_same_by_datasets_and_the_device(tmp_path):
    root = write_folder(tmp_path / "ds", small_rows())
    _reorder(root, ["type", "image", "make", "split"])
    assert check(root).ok
    ds = load_dataset(root)
    assert ds.heads == ("type", "make")
    heads, table = read_labels_csv(root / "labels.csv")
    assert heads == ds.heads and len(table) == len(ds.records)
    for r in ds.records:
        assert table[r.path] == r.labels


@pytest.mark.parametrize("header,message", [
    ("image,make,make,split", "duplicate column 'make'"),
    ("image, ,make,split", "blank name"),
    ("file,split,make", "missing column 'image'"),
    ("image,make,type", "missing column 'split'"),
    ("image,split", "no head columns"),
])
def test_a_bad_header_is_the_same_one_line_fault_everywhere(tmp_path, header, message):
    (tmp_path / "labels.csv").write_text(header + "\nimg/a.jpg,train,x\n")
    with pytest.raises(LabelsFileError, match=message) as device:
        read_labels_csv(tmp_path / "labels.csv")
    with pytest.raises(DatasetError, match=message) as host:
        load_dataset(tmp_path)
    assert str(device.value) == str(host.value) and "\n" not in str(host.value)


def test_a_short_row_names_its_line_and_merge_sources_may_omit_split(tmp_path):
    (tmp_path / "labels.csv").write_text("image,split,make\n\na.jpg,train,x\nb.jpg,train\n")
    with pytest.raises(LabelsFileError, match=r"row 4: 2 fields, the header has 3"):
        read_labels_file(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("make,image\nx,a.jpg\n")
    table = read_labels_file(tmp_path / "labels.csv", require_split=False)
    assert not table.has_split and table.heads == ("make",) and table.rows[0].split == ""
