"""``python -m datasets merge``: union of heads, dedupe by bytes, conflicts, splits, copy/reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasets_fixtures import small_rows, write_folder

from datasets.__main__ import main
from datasets.folder import MISSING, DatasetError, load_dataset
from datasets.merge import SplitPolicy, merge_datasets


def _make_only(root: Path) -> Path:
    """A source labelled for make only (its rows are small_rows' images)."""
    return write_folder(root, [(i, s, (lab[0],)) for i, s, lab in small_rows()], heads=("make",))


def _type_only_sharing(root: Path, make_root: Path, shared: int = 3) -> Path:
    """A source labelled for type only: its first ``shared`` images are byte copies of make_root's."""
    rows = small_rows()
    src = write_folder(root, [(f"t{i}", s, (lab[1],)) for i, s, lab in
                              ((img.replace("img/", "timg/"), s, lab) for img, s, lab in rows)],
                       heads=("type",), make_images=False)
    lines = ["image,split,type"]
    for k, (img, split, lab) in enumerate(rows):
        name = img.replace("img/", "timg/")
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if k < shared:
            shutil.copyfile(make_root / img, target)
        else:  # a different picture: other bytes
            from PIL import Image
            Image.new("RGB", (16, 16), (k * 11 % 255, 200, k * 7 % 255)).save(target, "JPEG")
        lines.append(f"{name},{split},{lab[1]}")
    (src / "labels.csv").write_text("\n".join(lines) + "\n")
    return src


@pytest.mark.parametrize("copy", [False, True])
def test_merge_unions_heads_and_dedupes_same_bytes(tmp_path, copy):
    a = _make_only(tmp_path / "a")
    b = _type_only_sharing(tmp_path / "b", a, shared=3)
    summary = merge_datasets([a, b], tmp_path / "c", copy=copy)
    ds = load_dataset(tmp_path / "c")
    n = len(small_rows())
    assert ds.heads == ("make", "type")
    assert summary.duplicates_merged == 3
    assert len(ds.records) == 2 * n - 3
    full = [r for r in ds.records if r.fully_labelled]
    assert len(full) == 3  # the shared pictures carry both labels
    assert sum(r.labels[1] == MISSING for r in ds.records) == n - 3
    assert sum(r.labels[0] == MISSING for r in ds.records) == n - 3
    assert summary.labelled == {"make": n, "type": n}
    if copy:
        assert all(r.image.startswith("images/") for r in ds.records)
        shutil.rmtree(a)
        shutil.rmtree(b)
        assert len(load_dataset(tmp_path / "c").records) == 2 * n - 3  # self-contained
    else:
        assert ds.image_root == tmp_path.resolve()
        assert not (tmp_path / "c" / "images").exists()


def test_conflicting_labels_name_both_sources_and_leave_out_untouched(tmp_path):
    a = _make_only(tmp_path / "a")
    rows = [(i, s, ("Z" if k == 0 else lab[0],)) for k, (i, s, lab) in enumerate(small_rows())]
    b = tmp_path / "b"
    shutil.copytree(a, b)
    lines = ["image,split,make"] + [f"{i},{s},{lab[0]}" for i, s, lab in rows]
    (b / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "c"
    merge_datasets([a], out)  # an earlier merge there must survive the failed one
    before = (out / "labels.csv").read_bytes()
    with pytest.raises(DatasetError) as err:
        merge_datasets([a, b], out)
    msg = str(err.value)
    assert "\n" not in msg and "conflicting labels" in msg
    assert str(a / "labels.csv") in msg and str(b / "labels.csv") in msg and "'Z'" in msg
    assert (out / "labels.csv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]
    res = CliRunner().invoke(main, ["merge", str(a), str(b), "--out", str(out)])
    assert res.exit_code != 0 and "conflicting labels" in res.output and "Traceback" not in res.output


def test_conflicting_splits_are_an_error(tmp_path):
    a = _make_only(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    text = (b / "labels.csv").read_text().replace("img/000.jpg,train", "img/000.jpg,test")
    (b / "labels.csv").write_text(text)
    with pytest.raises(DatasetError, match="conflicting splits"):
        merge_datasets([a, b], tmp_path / "c")


def test_rows_without_split_follow_the_policy(tmp_path):
    a = _make_only(tmp_path / "a")
    b = _type_only_sharing(tmp_path / "b", a, shared=0)
    # b has no split column at all: every row gets one from the policy.
    lines = (b / "labels.csv").read_text().splitlines()
    (b / "labels.csv").write_text("\n".join(
        ["image,type"] + [f"{ln.split(',')[0]},{ln.split(',')[2]}" for ln in lines[1:]]) + "\n")
    summary = merge_datasets([a, b], tmp_path / "c", split_policy="test")
    assert summary.split_assigned == len(lines) - 1
    ds = load_dataset(tmp_path / "c")
    assert all(r.split == "test" for r in ds.records if r.labels[0] == MISSING)
    # hash policy: a function of the bytes, the same on every run
    p = SplitPolicy.parse("hash:50/25/25")
    assert p.split_for("00000000") == "train" and p.split_for("0000003c") == "val" and p.split_for("0000004b") == "test"
    for bad in ("hash:50/50", "hash:a/b/c", "random", "hash:90/20/-10"):
        with pytest.raises(DatasetError, match="--split policy"):
            SplitPolicy.parse(bad)


def test_merge_cli_prints_summary(tmp_path):
    a = _make_only(tmp_path / "a")
    b = _type_only_sharing(tmp_path / "b", a, shared=2)
    res = CliRunner().invoke(main, ["merge", str(a), str(b), "--out", str(tmp_path / "c"), "--copy"])
    assert res.exit_code == 0, res.output
    assert "same image twice (one row kept): 2" in res.output
    res = CliRunner().invoke(main, ["merge", str(a), "--out", str(a)])
    assert res.exit_code != 0 and "one of the sources" in res.output
