"""The optional "nothing here" class: empty synthetic scenes labelled on every head, a dataset the
datasets stage loads and merges like any other."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.backgrounds import empty_scene, write_backgrounds
from datasets.folder import DatasetError, load_dataset


def test_backgrounds_merge_into_the_synthetic_set_as_a_class_per_head(tmp_path):
    from datasets.merge import merge_datasets
    from datasets.synth import generate

    generate(tmp_path / "cars", num_images=40, image_size=32, holdout_combos=0, workers=1)
    bg = write_backgrounds(tmp_path / "bg", num_images=10, image_size=32)
    merge_datasets([tmp_path / "cars", bg], tmp_path / "merged")
    ds = load_dataset(tmp_path / "merged")
    empty = [r for r in ds.records if "empty" in r.image]
    assert len(empty) == 10 and {r.labels for r in empty} == {("none", "none")}
    assert sorted({r.split for r in empty}) == ["test", "train", "val"]
    assert all("none" in ds.schema.head(h).classes for h in ("make", "type"))
    again = write_backgrounds(tmp_path / "bg2", num_images=10, image_size=32)
    assert (bg / "images" / "empty000003.jpg").read_bytes() == (again / "images" / "empty000003.jpg").read_bytes()


def test_an_empty_scene_has_the_generator_look_and_no_car():
    a = empty_scene(np.random.default_rng(0), 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and a.std() > 1


def test_a_bad_label_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match="non-empty word"):
        write_backgrounds(tmp_path / "bg", num_images=2, label="a,b")
