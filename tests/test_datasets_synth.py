"""Synthetic cars: catalogue, splits and held-out combinations, determinism, CLI, contact sheet."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter

import pytest
from click.testing import CliRunner
from PIL import Image

from datasets.__main__ import main
from datasets.folder import DatasetError, load_dataset
from datasets.synth import (
    MAKES,
    TYPES,
    catalogue,
    combinations,
    contact_sheet,
    generate,
    holdout_combinations,
)


def _digest(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "dataset.json"
    }


def test_catalogue_shape():
    assert len(MAKES) == len(set(MAKES)) == 48
    assert len(TYPES) == 8
    assert len(combinations()) == 108
    per_type = Counter(t for _, t in combinations())
    assert set(per_type) == set(TYPES) and min(per_type.values()) >= 10
    # Every make has its own (colour, badge) pair, so its identity does not hinge on one cue.
    assert len({(m.body, m.badge) for m in catalogue()}) == 48


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    a = generate(tmp_path / "a", num_images=20, image_size=32, holdout_combos=2, seed=3, workers=1)
    b = generate(tmp_path / "b", num_images=20, image_size=32, holdout_combos=2, seed=3, workers=2)
    assert a.workers == 1 and b.workers == 2
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(da) == 22 and da == db  # 20 JPEGs + labels.csv + catalogue.csv, byte for byte
    generate(tmp_path / "c", num_images=20, image_size=32, holdout_combos=2, seed=4, workers=1)
    assert _digest(tmp_path / "c") != da
    # Regenerating into the same folder replaces it with the same bytes.
    generate(tmp_path / "a", num_images=20, image_size=32, holdout_combos=2, seed=3, workers=1)
    assert _digest(tmp_path / "a") == da


def test_an_image_depends_on_seed_and_index_only(tmp_path):
    generate(tmp_path / "short", num_images=12, image_size=32, holdout_combos=0, seed=5, workers=1)
    generate(tmp_path / "long", num_images=20, image_size=32, holdout_combos=0, seed=5, workers=2)
    short, long = _digest(tmp_path / "short"), _digest(tmp_path / "long")
    assert all(long[name] == digest for name, digest in short.items() if name.startswith("images/"))


def test_splits_holdout_and_labels(tmp_path):
    summary = generate(tmp_path / "s", num_images=300, image_size=24, holdout_combos=3, seed=0, workers=1)
    ds = load_dataset(tmp_path / "s")
    assert ds.heads == ("make", "type")
    held = set(summary.holdout)
    assert len(held) == 3 and held == set(holdout_combinations(0, 3))
    for r in ds.records:
        assert (r.split == "test_unseen") == (tuple(r.labels) in held)
        assert tuple(r.labels) in set(combinations())
    seen = ds.split_sizes
    n_seen = 300 - seen.get("test_unseen", 0)
    assert abs(seen["train"] - 0.7 * n_seen) <= 1 and abs(seen["val"] - 0.15 * n_seen) <= 1
    # The held-out combinations' make and type are both learnable from train.
    train_makes = {r.labels[0] for r in ds.split("train")}
    train_types = {r.labels[1] for r in ds.split("train")}
    assert all(m in train_makes and t in train_types for m, t in held)
    with open(tmp_path / "s" / "labels.csv", newline="") as f:
        assert next(csv.reader(f)) == ["image", "split", "make", "type"]
    with Image.open(ds.records[0].path) as img:
        assert img.format == "JPEG" and img.size == (24, 24)


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="too many"):
        holdout_combinations(0, 60)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate(tmp_path / "busy", num_images=10, image_size=16, workers=1)
    assert (tmp_path / "busy" / "notes.txt").exists()


def test_cli_and_contact_sheet(tmp_path):
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, [
        "synth", "--out", str(tmp_path / "s"), "--num-images", "40", "--image-size", "32",
        "--holdout-combos", "1", "--seed", "1", "--workers", "1", "--contact-sheet", str(sheet),
    ])
    assert result.exit_code == 0, result.output
    assert "wrote 40 synthetic cars" in result.output and "held out for test_unseen" in result.output
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.width == 8 * 80
    assert sheet.stat().st_size < 300_000
    # contact_sheet is also a function of any dataset folder.
    contact_sheet(tmp_path / "s", tmp_path / "small.png", columns=2, rows=2, tile=32)
    assert Image.open(tmp_path / "small.png").size == (64, 2 * (32 + 22))
