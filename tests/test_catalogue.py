"""The catalogue (edge/contract/catalogue.py): the valid combinations, read safely, and the joint
answer decoded among them, as the datasets write it and train.json records it."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from edge.contract.catalogue import CATALOGUE_FILE, MAX_BYTES, CatalogueError, read_catalogue, write_catalogue

CLASSES = {"make": ("Aldor", "Brisk", "Corvo"), "type": ("Coupe", "Sedan", "Van")}


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_decode_names_the_best_listed_combination_even_one_train_never_held(tmp_path):
    # Aldor builds Coupe and Sedan, Brisk only Van, Corvo only Sedan.
    cat = read_catalogue(_write(tmp_path / CATALOGUE_FILE,
                                "type,make,notes\nCoupe,Aldor,x\nSedan,Aldor,\nVan,Brisk,\nSedan,Corvo,\n"), CLASSES)
    assert cat.heads == ("make", "type") and len(cat.rows) == 4 and cat.skipped == 0
    probs = {
        # Each head alone names Aldor/Van, which does not exist; the best listed one is Aldor/Sedan
        # (0.6 * 0.35 against Brisk/Van's 0.3 * 0.6 and Aldor/Coupe's 0.6 * 0.05).
        "make": np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]),
        "type": np.array([[0.05, 0.35, 0.6], [0.5, 0.3, 0.2]]),
    }
    got = cat.decode(probs)
    assert got["make"].tolist() == [0, 2] and got["type"].tolist() == [1, 1]


def test_columns_by_name_unknown_classes_skipped_and_counted(tmp_path):
    path = _write(tmp_path / CATALOGUE_FILE, "\ufeffmake , type\nAldor,Coupe\nAldor,Coupe\nZephyr,Van\n\n Brisk , Van \n")
    cat = read_catalogue(path, CLASSES)
    assert cat.rows.tolist() == [[0, 0], [1, 2]] and cat.skipped == 1


@pytest.mark.parametrize("text,message", [
    ("make,colour\nAldor,red\n", "no column for head 'type'"),
    ("", "empty"),
    ("make,type\nAldor,Coupe,extra\n", "row 2: 3 fields, the header has 2"),
])
def test_a_bad_catalogue_is_one_line_naming_the_file(tmp_path, text, message):
    path = _write(tmp_path / CATALOGUE_FILE, text)
    with pytest.raises(CatalogueError) as e:
        read_catalogue(path, CLASSES)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_hostile_catalogues_are_refused_unread(tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"make,type\n\xff\xfe\x00\x81garbage\n")
    with pytest.raises(CatalogueError, match="not a UTF-8 CSV"):
        read_catalogue(binary, CLASSES)
    huge = tmp_path / "huge.csv"
    with open(huge, "wb") as f:
        f.truncate(MAX_BYTES + 10)  # sparse: nothing is written, and nothing must be read past the limit
    with pytest.raises(CatalogueError, match="larger than"):
        read_catalogue(huge, CLASSES)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)  # a reader that waited for a writer would hang here
    with pytest.raises(CatalogueError, match="not a regular file"):
        read_catalogue(fifo, CLASSES)


def test_split_metrics_scores_the_catalogue_decode_on_the_joint_rows(tmp_path):
    from edge.contract.schema import LabelSchema
    from train.data import Arrays
    from train.metrics import split_metrics

    schema = LabelSchema.from_labels(("make", "type"), [(m, t) for m in CLASSES["make"] for t in CLASSES["type"]])
    path = _write(tmp_path / CATALOGUE_FILE, "make,type\nAldor,Sedan\nBrisk,Van\n")
    cat = read_catalogue(path, {h.name: h.classes for h in schema.heads})
    labels = {"make": np.array([0, 1, -1]), "type": np.array([1, 2, 2])}
    arrays = Arrays(np.zeros((3, 1), np.float32), labels, np.full(3, -1, np.int32))
    # Row 0: the heads alone say Aldor/Van (wrong); the catalogue says Aldor/Sedan (right).
    # Row 1: right either way. Row 2: no make label, counts in neither joint figure.
    probs = {"make": np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]]),
             "type": np.array([[0.0, 0.45, 0.55], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])}
    m = split_metrics(schema, probs, arrays, cat)
    assert m["joint_accuracy"] == 0.5 and m["joint_accuracy_catalogue"] == 1.0 and m["n_all_labelled"] == 2
    assert "joint_accuracy_catalogue" not in split_metrics(schema, probs, arrays)


def test_the_synthetic_set_lists_every_combination_the_held_out_ones_too(tmp_path):
    from datasets.folder import dataset_catalogue, load_dataset
    from datasets.synth import combinations, generate

    summary = generate(tmp_path / "s", num_images=60, image_size=16, holdout_combos=2, seed=0, workers=1)
    with open(tmp_path / "s" / CATALOGUE_FILE, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["make", "type"] and {tuple(r) for r in rows[1:]} == set(combinations())
    assert set(summary.holdout) <= set(combinations())
    ds = load_dataset(tmp_path / "s")
    cat = dataset_catalogue(tmp_path / "s", ds.schema)
    # A 60-image set holds only some makes and types: the rest of the catalogue is skipped, counted.
    assert cat is not None and len(cat.rows) + cat.skipped == len(combinations())
    named = {tuple(ds.schema.heads[j].classes[c] for j, c in enumerate(row)) for row in cat.rows}
    assert {tuple(r.labels) for r in ds.records} <= named


def test_write_catalogue_sorts_and_dedups(tmp_path):
    path = write_catalogue(tmp_path / CATALOGUE_FILE, ("make", "type"), [("B", "x"), ("A", "y"), ("B", "x")])
    assert path.read_text() == "make,type\nA,y\nB,x\n"

