"""``python -m train add-head``: grow a frozen-base run by a head; old heads bit for bit; bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from train_fixtures import write_folder

from edge.contract.schema import LabelSchema
from train.__main__ import main
from train.add_head import AddHeadError, add_heads
from train.fit import TrainConfig
from train.records import train_key_errors


def _with_colour(src: Path, dst: Path, every: int = 3) -> Path:
    """A dataset referencing ``src``'s images, with a new head ``colour`` (warm/cool, from make)
    labelled on all rows but every ``every``-th one (an empty cell there)."""
    dst.mkdir(parents=True, exist_ok=True)
    lines = (src / "labels.csv").read_text().splitlines()
    out = [lines[0] + ",colour"]
    for k, line in enumerate(lines[1:]):
        make = line.split(",")[2]
        colour = "" if k % every == 0 else ("warm" if make == "red" else "cool")
        out.append(f"{line},{colour}")
    (dst / "labels.csv").write_text("\n".join(out) + "\n")
    (dst / "dataset.json").write_text(json.dumps({"image_root": str(src.resolve())}))
    return dst


def _fake_run(root: Path, freeze_base: bool = True, approaches=("multihead", "separate"),
              makes=("blue", "green", "red")) -> Path:
    """A run folder's JSON only (no models): enough for the checks made before any model is read."""
    root.mkdir(parents=True)
    cfg = TrainConfig(data="d", out=str(root), backbone="tiny_cnn", image_size=(32, 32), freeze_base=freeze_base,
                      approaches=approaches, weights="none", warmup_epochs=0)
    (root / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [(m, t) for m in makes for t in ("box", "hbar", "vbar")]
    LabelSchema.from_labels(("make", "type"), rows).save(root / "schema.json")
    (root / "train.json").write_text(json.dumps({"variants": {a: {} for a in approaches}}))
    return root


def _save_untrained_multihead(run: Path) -> None:
    """An untrained tiny_cnn multihead in the fake run: enough to reach the image checks."""
    from train.models import ModelUnit, build_unit

    schema = LabelSchema.load(run / "schema.json")
    model = build_unit(ModelUnit("multihead", "multihead", schema.head_names), "tiny_cnn", schema, (32, 32),
                       freeze_base=True)
    (run / "models").mkdir()
    model.save(str(run / "models" / "multihead.keras"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return _with_colour(write_folder(tmp_path / "ds", n=48), tmp_path / "ds_colour")


def _error(tmp_path, run, data, heads, out=None) -> str:
    with pytest.raises(AddHeadError) as err:
        add_heads(run, data, heads, out or tmp_path / "new", log=lambda s: None)
    msg = str(err.value)
    assert "\n" not in msg
    assert not (tmp_path / "new").exists()  # nothing written
    return msg


def test_head_named_twice_or_already_present(tmp_path, data_dir):
    run = _fake_run(tmp_path / "run")
    assert "head 'colour' is named twice" in _error(tmp_path, run, data_dir, ["colour", "colour"])
    assert "already has head 'make'" in _error(tmp_path, run, data_dir, ["make"])


def test_data_without_the_heads_column(tmp_path, data_dir):
    run = _fake_run(tmp_path / "run")
    msg = _error(tmp_path, run, data_dir, ["size"])
    assert "has no column 'size'" in msg and "labels.csv" in msg
    # the run's own heads must be columns too (empty cells allowed)
    only_colour = tmp_path / "only"
    shutil.copytree(data_dir, only_colour)
    rows = [ln.split(",") for ln in (only_colour / "labels.csv").read_text().splitlines()]
    (only_colour / "labels.csv").write_text("\n".join(",".join([r[0], r[1], r[2], r[4]]) for r in rows) + "\n")
    assert "no column for the run's head 'type'" in _error(tmp_path, run, only_colour, ["colour"])


def test_images_that_do_not_fit_the_run(tmp_path, data_dir):
    run = _fake_run(tmp_path / "run")
    _save_untrained_multihead(run)
    bad = tmp_path / "bad"
    shutil.copytree(data_dir, bad)
    images = tmp_path / "garbage"
    shutil.copytree(tmp_path / "ds", images)
    for p in (images / "images").iterdir():
        p.write_bytes(b"not an image at all")
    (bad / "dataset.json").write_text(json.dumps({"image_root": str(images)}))
    msg = _error(tmp_path, run, bad, ["colour"])
    assert "do not fit the run's input 32x32x3" in msg


def test_label_outside_the_runs_classes(tmp_path, data_dir):
    run = _fake_run(tmp_path / "run", makes=("blue", "red"))  # the data also has green
    msg = _error(tmp_path, run, data_dir, ["colour"])
    assert "make='green', not a class of the run's head 'make'" in msg


def test_fine_tuned_run_is_refused_and_joint_only_needs_the_flag(tmp_path, data_dir):
    run = _fake_run(tmp_path / "ft", freeze_base=False)
    msg = _error(tmp_path, run, data_dir, ["colour"])
    assert "was fine-tuned" in msg and "base has moved" in msg
    run = _fake_run(tmp_path / "j", approaches=("joint",))
    assert "--retrain-joint" in _error(tmp_path, run, data_dir, ["colour"])


def test_out_must_be_new_and_cli_errors_are_one_line(tmp_path, data_dir):
    run = _fake_run(tmp_path / "run")
    assert "--out must be a new folder" in _error(tmp_path, run, data_dir, ["colour"], out=run)
    res = CliRunner().invoke(main, ["add-head", str(run), "--data", str(data_dir), "--head", "make",
                                    "--out", str(tmp_path / "new")])
    assert res.exit_code != 0 and "already has head 'make'" in res.output and "Traceback" not in res.output


@pytest.mark.slow
def test_add_head_keeps_old_heads_bit_for_bit_through_convert(tmp_path, data_dir):
    """Train a frozen-base run, add ``colour``, convert both runs to float32 TFLite: the old heads'
    outputs are identical, old weights and untouched files are equal, and the new run is complete."""
    from artifacts.keras_io import load_model
    from convert.run import convert_run
    from convert.runner import predict_outputs
    from train.fit import run_training

    folder = tmp_path / "ds"
    run, new = tmp_path / "run", tmp_path / "run_colour"
    cfg = TrainConfig(data=str(folder), out=str(run), backbone="tiny_cnn", image_size=(32, 32), batch_size=16,
                      epochs=2, freeze_base=True, approaches=("multihead", "joint", "separate"), verbose=0,
                      weights="none", warmup_epochs=0, compose="none")  # test_compose.py: add-head inherits a mode
    run_training(cfg)
    notes: list[str] = []
    rec = add_heads(run, data_dir, ["colour"], new, log=notes.append)
    assert any("joint left out" in n for n in notes)
    for r in (run, new):  # every key both writers wrote is one train.records names
        assert train_key_errors(json.loads((r / "train.json").read_text())) == [], r
    # Every image of DATA was seen by the run: no image decoded, no backbone pass.
    assert rec["add_head"]["features_extracted"] == 0 and rec["add_head"]["features_from_store"] > 0
    assert (new / "features").is_dir()
    assert sorted(p.name for p in (new / "models").iterdir()) == [
        "multihead.keras", "separate.colour.keras", "separate.make.keras", "separate.type.keras"]
    for h in ("make", "type"):
        assert (new / f"models/separate.{h}.keras").read_bytes() == (run / f"models/separate.{h}.keras").read_bytes()
    old_m, new_m = load_model(run / "models/multihead.keras"), load_model(new / "models/multihead.keras")
    for layer in ("backbone", "make", "type"):
        for a, b in zip(old_m.get_layer(layer).get_weights(), new_m.get_layer(layer).get_weights(), strict=True):
            assert np.array_equal(a, b), layer
    assert list(new_m.output) == ["make", "type", "colour"]
    schema = LabelSchema.load(new / "schema.json")
    assert schema.head_names == ("make", "type", "colour")
    assert schema.head("make") == LabelSchema.load(run / "schema.json").head("make")
    v = rec["variants"]["multihead"]
    labelled_colour = rec["dataset"]["labelled"]["test"]["colour"]
    assert v["metrics"]["test"]["heads"]["colour"]["n"] == labelled_colour < rec["dataset"]["sizes"]["test"]
    assert rec["add_head"]["heads"] == ["colour"] and rec["add_head"]["joint"] == "left out"
    assert json.loads((new / "config.json").read_text())["approaches"] == ["multihead", "separate"]

    # The parent's multihead alone (a run folder holding one model) converts once, not all four.
    parent = tmp_path / "parent_multihead"
    (parent / "models").mkdir(parents=True)
    for name in ("config.json", "schema.json", "train.json", "models/multihead.keras"):
        shutil.copy2(run / name, parent / name)
    for r in (parent, new):
        doc = convert_run(r, precisions=("float32",), legacy=False)
        assert not doc.get("errors"), doc.get("errors")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    _, before, _ = predict_outputs(parent / "edge/multihead.float32.tflite", images)
    card, after, _ = predict_outputs(new / "edge/multihead.float32.tflite", images)
    assert card.schema.head_names == ("make", "type", "colour")
    for h in ("make", "type"):
        assert np.array_equal(before[h], after[h]), h
    assert after["colour"].shape == (6, 2)


def test_feature_store_round_trip_and_hostile_files(tmp_path):
    from train.features import load_features, save_features, store_path

    keys = ["a" * 32, "b" * 32]
    save_features(tmp_path, "f" * 40, keys, np.ones((2, 3), np.float32))
    got = load_features(tmp_path, "f" * 40)
    assert set(got) == set(keys) and got[keys[0]].shape == (3,)
    assert load_features(tmp_path, "e" * 40) == {}  # another backbone: nothing
    # A pickled object array must never be unpickled: the store is then simply empty.
    path = store_path(tmp_path, "f" * 40)
    with open(path, "wb") as f:
        np.savez(f, keys=np.array([{"evil": 1}], dtype=object), features=np.ones((1, 3)), fingerprint=np.array("f" * 40))
    assert load_features(tmp_path, "f" * 40) == {}
    path.write_bytes(b"PK\x03\x04 not a zip")
    assert load_features(tmp_path, "f" * 40) == {}
