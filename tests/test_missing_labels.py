"""Missing labels: an empty cell means "not labelled for this head", through datasets and training."""

from __future__ import annotations

import logging

import numpy as np
from click.testing import CliRunner
from datasets_fixtures import small_rows, write_folder

from datasets.__main__ import main as datasets_main
from datasets.folder import MISSING, check, load_dataset
from datasets.pipeline import UNLABELLED, load_split


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
    keep = arrays.labelled("type")
    assert not keep[0] and keep[1]
    assert arrays.sample_weights(("type",))["type"].tolist() == keep.astype(np.float32).tolist()
    keep = arrays.labelled("joint")
    assert int(keep.sum()) == 3 and (arrays.joint[keep] >= 0).all()


# -- training and evaluation -----------------------------------------------------------------------

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from train_fixtures import make_arrays  # noqa: E402

from train.data import Arrays  # noqa: E402


def _drop_labels(data: dict[str, Arrays], head: str, rows_by_split: dict[str, np.ndarray]) -> dict[str, Arrays]:
    """A copy of ``data`` with ``head`` unlabelled (-1) on the given rows (and joint -1 there)."""
    out = {}
    for split, a in data.items():
        rows = rows_by_split.get(split)
        if rows is None:
            out[split] = a
            continue
        labels = {h: v.copy() for h, v in a.labels.items()}
        labels[head][rows] = UNLABELLED
        joint = a.joint.copy()
        joint[rows] = -1
        out[split] = Arrays(a.images, labels, joint)
    return out


def _noise_images(data: dict[str, Arrays], split: str, rows: np.ndarray) -> dict[str, Arrays]:
    a = data[split]
    images = a.images.copy()
    images[rows] = np.random.default_rng(5).integers(0, 255, images[rows].shape, dtype=np.uint8)
    return {**data, split: dataclasses.replace(a, images=images)}


def _cfg(out, **kw):
    from train.fit import TrainConfig

    base = dict(data="mem", out=str(out), backbone="tiny_cnn", image_size=(32, 32), batch_size=16,
                epochs=2, learning_rate=3e-3, verbose=0, weights="none", freeze_base=False, warmup_epochs=0,
                fine_tune_learning_rate=None, compose="none")  # plain heads: tests/test_compose.py covers the rest
    base.update(kw)
    return TrainConfig(**base)


def _weights(run, model: str, layer: str) -> list[np.ndarray]:
    from artifacts.keras_io import load_model

    return load_model(run / "models" / f"{model}.keras").get_layer(layer).get_weights()


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("path", ["feature_cache", "whole_model"])
def test_multihead_masks_a_heads_loss_to_its_labelled_rows(tmp_path, path):
    """The rows without a type label cannot move the type head: replacing their images by noise
    leaves the type head bit-identical (frozen base, so the head reads fixed features), while the
    make head, which is labelled there, changes. Both training paths."""
    from train.fit import run_training

    schema, data = make_arrays(n=96)
    rows = {s: np.arange(a.n) % 3 == 0 for s, a in data.items() if s != "test_unseen"}
    partial = _drop_labels(data, "type", rows)
    noisy = _noise_images(partial, "train", rows["train"])
    kw = dict(approaches=("multihead",), freeze_base=True, feature_cache=path == "feature_cache")
    rec = run_training(_cfg(tmp_path / "a", **kw), partial, schema)
    run_training(_cfg(tmp_path / "b", **kw), noisy, schema)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _same(_weights(a, "multihead", "type"), _weights(b, "multihead", "type"))
    assert not _same(_weights(a, "multihead", "make"), _weights(b, "multihead", "make"))
    v = rec["variants"]["multihead"]
    n_train = data["train"].n
    assert v["train_n"] == {"make": n_train, "type": n_train - int(rows["train"].sum())}
    test = v["metrics"]["test"]
    assert test["heads"]["type"]["n"] == data["test"].n - int(rows["test"].sum())
    assert test["heads"]["make"]["n"] == data["test"].n
    assert test["n_all_labelled"] == test["heads"]["type"]["n"]


@pytest.mark.slow
def test_joint_and_separate_train_only_on_their_rows_even_fine_tuned(tmp_path, caplog):
    """joint: rows labelled for every head; separate.<h>: rows labelled for h. The other rows are not
    in their training at all: noise there leaves those models bit-identical, every layer training."""
    from train.fit import run_training

    schema, data = make_arrays(n=96)
    rows = {s: np.arange(a.n) % 4 == 1 for s, a in data.items() if s != "test_unseen"}
    partial = _drop_labels(data, "make", rows)
    noisy = _noise_images(partial, "train", rows["train"])
    kw = dict(approaches=("joint", "separate"), epochs=1)
    with caplog.at_level(logging.INFO, logger="train.fit"):
        rec = run_training(_cfg(tmp_path / "a", **kw), partial, schema)
    assert f"[joint] trains on {data['train'].n - int(rows['train'].sum())} of {data['train'].n}" in caplog.text
    run_training(_cfg(tmp_path / "b", **kw), noisy, schema)
    a, b = tmp_path / "a", tmp_path / "b"
    assert _same(_weights(a, "joint", "joint"), _weights(b, "joint", "joint"))
    assert _same(_weights(a, "separate.make", "make"), _weights(b, "separate.make", "make"))
    # separate.type sees the noisy rows (they carry type): it changes.
    assert not _same(_weights(a, "separate.type", "type"), _weights(b, "separate.type", "type"))
    n_full = data["train"].n - int(rows["train"].sum())
    assert rec["variants"]["joint"]["train_n"] == {"joint": n_full}
    assert rec["variants"]["separate"]["train_n"] == {"make": n_full, "type": data["train"].n}
    m = rec["variants"]["joint"]["metrics"]["test"]
    assert m["heads"]["make"]["n"] == m["n_all_labelled"] == data["test"].n - int(rows["test"].sum())


def test_split_metrics_count_labelled_rows_only():
    from edge.contract.schema import LabelSchema
    from train.fit import split_metrics

    schema = LabelSchema.from_labels(("a", "b"), [("x", "p"), ("y", "q")])
    arrays = Arrays(np.zeros((4, 2, 2, 3), np.uint8),
                    {"a": np.array([0, 1, -1, 0]), "b": np.array([0, -1, 1, 1])}, np.array([0, -1, -1, -1]))
    probs = {"a": np.array([[.9, .1], [.1, .9], [.9, .1], [.1, .9]]),  # right, right, (none), wrong
             "b": np.array([[.9, .1], [.9, .1], [.1, .9], [.1, .9]])}  # right, (none), right, right
    m = split_metrics(schema, probs, arrays)
    assert m["heads"]["a"]["n"] == 3 and m["heads"]["a"]["accuracy"] == pytest.approx(2 / 3)
    assert m["heads"]["b"]["n"] == 3 and m["heads"]["b"]["accuracy"] == 1.0
    assert m["n_all_labelled"] == 2 and m["joint_accuracy"] == pytest.approx(1 / 2)


def test_report_shows_labelled_counts_only_when_labels_are_missing(tmp_path):
    import json

    from report_fixtures import write_run

    from report.render.markdown import approach_table, load_run

    run = write_run(tmp_path / "full")
    labels = [r.label for r in approach_table(load_run(run)).rows]
    assert not any("labelled" in x for x in labels)  # a fully labelled run's report is unchanged
    doc = json.loads((run / "train.json").read_text())
    for name, v in doc["variants"].items():
        v["metrics"]["test"]["heads"]["type"]["n"] = 25
        v["metrics"]["test"]["heads"]["make"]["n"] = 40
        v["metrics"]["test"]["n_all_labelled"] = 25
        v["train_n"] = {"joint": 70} if name == "joint" else {"make": 100, "type": 70}
    (run / "train.json").write_text(json.dumps(doc))
    table = approach_table(load_run(run))
    rows = {r.label: r for r in table.rows}
    assert rows["type labelled images (test)"].cell("multihead") == "25"
    assert rows["type labelled images (train)"].cell("separate") == "70"
    assert rows["make labelled images (train)"].cell("joint") == "70"
    assert rows["test images labelled for every head"].cell("joint") == "25"


def test_edge_accuracy_counts_each_head_over_its_labelled_rows():
    from edge.runtime.labels import Accuracy
    from edge.runtime.predict import HeadResult, Prediction

    def pred(make: str, type_: str) -> Prediction:
        return Prediction("x.jpg", {"make": HeadResult(make, 0.9, ()), "type": HeadResult(type_, 0.8, ())})

    acc = Accuracy.for_labels(("make", "type"), ("make", "type"))
    acc.add(pred("A", "suv"), ("A", "suv"))      # both right
    acc.add(pred("A", "suv"), ("B", ""))         # make wrong, type unlabelled
    acc.add(pred("A", "sedan"), ("", "sedan"))   # make unlabelled, type right
    acc.add(pred("A", "sedan"), ("A", "suv"))    # make right, type wrong
    d = acc.to_dict()
    assert d["heads_n"] == {"make": 3, "type": 3} and d["n"] == 4
    assert d["heads"]["make"] == pytest.approx(2 / 3) and d["heads"]["type"] == pytest.approx(2 / 3)
    assert d["joint_n"] == 2 and d["joint"] == pytest.approx(1 / 2)
    only_make = Accuracy.for_labels(("make", "type"), ("make", "type"))
    only_make.add(pred("A", "suv"), ("A", ""))
    d = only_make.to_dict()
    assert d["heads"] == {"make": 1.0} and d["joint"] is None
