"""Missing labels: an empty cell means "not labelled for this head", through datasets and training."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from datasets_fixtures import small_rows, write_folder

from datasets.__main__ import main as datasets_main
from datasets.folder import MISSING, check, load_dataset
from datasets.pipeline import UNLABELLED, load_split, target_labels


def _partial_rows() -> list[tuple[str, str, tuple[str, ...]]]:
    """small_rows with some cells emptied: row 0 misses type, row 1 misses make, row 2 misses both."""
    rows = small_rows()
    rows[0] = (rows[0][0], rows[0][1], (rows[0][2][0], ""))
    rows[1] = (rows[1][0], rows[1][1], ("", rows[1][2][1]))
    rows[2] = (rows[2][0], rows[2][1], ("", ""))
    rows[7] = (rows[7][0], rows[7][1], (rows[7][2][0], ""))  # a val row missing type
    return rows


def test_empty_cells_load_as_missing_and_all_empty_rows_are_skipped(tmp_path):
    root = write_folder(tmp_path / "ds", _partial_rows())
    ds = load_dataset(root)
    assert ds.unlabelled_rows == 1
    assert len(ds.records) == len(small_rows()) - 1
    assert ds.records[0].labels[1] == MISSING and not ds.records[0].fully_labelled
    assert ds.records[2].fully_labelled
    # Classes ignore the empty cells; combinations come from fully labelled train rows only.
    assert ds.schema.head("make").classes == ("A", "B")
    assert all(MISSING not in c for c in ds.schema.combinations)


def test_check_reports_labelled_rows_per_head_and_split(tmp_path):
    root = write_folder(tmp_path / "ds", _partial_rows())
    report = check(root)
    assert report.ok
    assert report.unlabelled_rows == 1
    # train has 6 rows, one skipped (all empty) -> 5; make missing on row 1, type on row 0.
    assert report.labelled["make"]["train"] == 4
    assert report.labelled["type"]["train"] == 4
    assert report.labelled["all heads"]["train"] == 3
    assert report.labelled["type"]["val"] == 5 and report.labelled["make"]["val"] == 6
    out = CliRunner().invoke(datasets_main, ["check", str(root)])
    assert out.exit_code == 0, out.output
    assert "rows with no label (skipped): 1" in out.output
    assert "4/5" in out.output  # labelled/total of a head in train


def test_load_split_marks_unlabelled_and_head_targets_drop_them(tmp_path):
    root = write_folder(tmp_path / "ds", _partial_rows())
    ds = load_dataset(root)
    arrays = load_split(ds, "train", 8, 8)
    assert arrays.labels["type"][0] == UNLABELLED and arrays.labels["make"][1] == UNLABELLED
    assert arrays.joint[0] == -1 and arrays.joint[1] == -1 and arrays.joint[2] >= 0
    labels, keep = target_labels(arrays, "type")
    assert keep is not None and not keep[0] and keep[1]
    assert (labels["type"] >= 0).all()
    labels, keep = target_labels(arrays, "joint")
    assert keep is not None and int(keep.sum()) == 3
    assert np.array_equal(labels["joint"], arrays.joint[arrays.joint >= 0])
