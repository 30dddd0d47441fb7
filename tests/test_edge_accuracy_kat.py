"""Known answers for the edge's accuracy arithmetic: Accuracy itself, and predict's accuracy line
on a labels.csv whose head columns come in another order than the model's heads, with deliberate
hits and misses chosen from the model's own predictions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edge_fixtures import MAKES, TYPES, edge_fx_fixture  # noqa: F401

from edge.runtime.labels import Accuracy
from edge.runtime.predict import HeadResult, Prediction

REPO = Path(__file__).resolve().parents[1]


def _pred(make: str, type_: str) -> Prediction:
    return Prediction("x.jpg", {"make": HeadResult(make, 0.9, ((make, 0.9),)),
                                "type": HeadResult(type_, 0.8, ((type_, 0.8),))})


def test_accuracy_counts_by_column_name_not_position():
    # labels.csv columns: type first, then a head the model lacks, then make.
    acc = Accuracy.for_labels(("type", "colour", "make"), ("make", "type"))
    acc.add(_pred("audi", "suv"), ("suv", "red", "audi"))      # both right
    acc.add(_pred("audi", "suv"), ("sedan", "red", "audi"))    # make right, type wrong
    acc.add(_pred("bmw", "van"), ("van", "blue", "ford"))      # type right, make wrong
    acc.add(_pred("bmw", "van"), ("suv", "blue", "ford"))      # both wrong
    acc.add(Prediction("bad.jpg", {}, error="corrupt"), ("suv", "red", "audi"))  # not counted
    assert acc.to_dict() == {"heads": {"make": 0.5, "type": 0.5}, "heads_n": {"make": 4, "type": 4},
                             "joint": 0.25, "joint_n": 4, "n": 4}
    # An empty cell is "not labelled for this head": that head and joint skip the row.
    acc.add(_pred("audi", "suv"), ("", "red", "audi"))
    assert acc.to_dict() == {"heads": {"make": 0.6, "type": 0.5}, "heads_n": {"make": 5, "type": 4},
                             "joint": 0.25, "joint_n": 4, "n": 5}
    assert Accuracy.for_labels(("colour",), ("make", "type")).to_dict() is None


# (make right?, type right?) per image: make 3/6, type 4/6, joint 2/6.
PATTERN = [(True, True), (True, False), (False, True), (False, False), (True, True), (False, True)]


def _other(label: str, classes: tuple[str, ...]) -> str:
    return next(c for c in classes if c != label)


def _edge(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=os.environ.copy(), timeout=300)


@pytest.mark.parametrize("variant", ["multihead.float32", "joint.int8", "separate.float32"])
def test_predict_accuracy_line_is_the_known_answer(edge_fx, tmp_path, variant):
    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in (edge_fx / "images").iterdir() if p.suffix in (".jpg", ".png"))[:len(PATTERN)]
    assert len(names) == len(PATTERN)
    for name in names:
        shutil.copy(edge_fx / "images" / name, images / name)
    first = _edge("predict", edge_fx / "models", images, "--variant", variant, "--format", "jsonl")
    assert first.returncode == 0, first.stderr[-2000:]
    predicted = {Path(r["image"]).name: r["heads"] for r in map(json.loads, first.stdout.splitlines())}
    assert "accuracy" not in first.stderr  # no labels.csv yet

    rows = ["image,split,type,make"]  # the model's heads are (make, type): columns reversed on purpose
    for name, (make_ok, type_ok) in zip(names, PATTERN, strict=True):
        make, type_ = predicted[name]["make"]["label"], predicted[name]["type"]["label"]
        rows.append(f"{name},test,{type_ if type_ok else _other(type_, TYPES)},"
                    f"{make if make_ok else _other(make, MAKES)}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")

    second = _edge("predict", edge_fx / "models", images, "--variant", variant)
    assert second.returncode == 0, second.stderr[-2000:]
    line = next(x for x in second.stdout.splitlines() if x.startswith("accuracy over"))
    assert line.startswith(f"accuracy over 6 labelled images ({variant})"), line
    figures = {k: float(v) for k, v in re.findall(r"\b(make|type|joint) ([0-9.]+)", line)}
    assert figures == {"make": pytest.approx(3 / 6, abs=5e-5), "type": pytest.approx(4 / 6, abs=5e-5),
                       "joint": pytest.approx(2 / 6, abs=5e-5)}, line
