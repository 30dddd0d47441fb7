"""Partial reconversion keeps what it did not touch (issue 11's convert.json bug, issue 17's test).

Converting a run again with only the int8 calibration changed rebuilds the int8 files alone; every
variant whose files are unchanged must keep its ``check`` in convert.json (the report reads it),
byte for byte as the first conversion wrote it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from convert_fixtures import make_dataset, make_run  # noqa: E402


@pytest.mark.slow
def test_partial_reconversion_keeps_every_unchanged_variants_check(tmp_path):
    from convert.records import convert_key_errors
    from convert.run import convert_run

    data = make_dataset(tmp_path / "data", per_combo={"train": 2, "val": 1, "test": 2})
    run = make_run(tmp_path / "runs" / "r", data, approaches=("multihead", "separate"))
    first = convert_run(run, ["float32", "int8"], calibration=8, legacy=False)
    assert set(first["variants"]) == {"multihead.float32", "multihead.int8", "separate.float32", "separate.int8"}
    assert all("check" in v for v in first["variants"].values()), first["variants"]

    logs: list[str] = []
    second = convert_run(run, ["float32", "int8"], calibration=4, legacy=False, log=logs.append)
    rebuilt = sorted(ln.split()[1] for ln in logs if ln.startswith("converted"))
    assert rebuilt == ["edge/multihead.int8.tflite", "edge/separate.make.int8.tflite",
                       "edge/separate.type.int8.tflite"]
    on_disk = json.loads((run / "convert.json").read_text())
    for doc in (second, on_disk):
        for vid in ("separate.float32", "multihead.float32"):  # untouched: the first run's check, unchanged
            assert doc["variants"][vid].get("check") == first["variants"][vid]["check"], vid
        for vid in ("multihead.int8", "separate.int8"):  # rebuilt: checked again
            assert doc["variants"][vid]["check"]["n"] == 12, vid
    assert on_disk["variants"]["separate.int8"]["check"]["runtime"] == "edge.runtime.predict.Predictor"
    assert convert_key_errors(on_disk) == []  # every key the writer wrote is one convert.records names


def test_convert_key_errors_names_a_renamed_key():
    from convert.records import convert_key_errors

    check = {"n": 0, "heads": {"make": {"accuracy": None, "keras_accuracy": None, "drop": None, "agreement": None,
                                        "max_prob_diff": None}}, "joint_accuracy": None, "keras_joint_accuracy": None}
    variant = {"approach": "multihead", "precision": "int8", "files": ["edge/multihead.int8.tflite"], "bytes": 1,
               "complete": True, "check": check, "warnings": [], "errors": []}
    doc = {"format_version": 1, "run": "r", "versions": {}, "files": {}, "warnings": [], "errors": [],
           "settings": {"precisions": ["int8"], "calibration": 8, "threads": 1, "check_split": "test",
                        "check_images": None, "seed": 0},
           "variants": {"multihead.int8": variant}}
    assert convert_key_errors(doc) == []
    variant["size_bytes"] = variant.pop("bytes")
    check["heads"]["make"]["acc"] = check["heads"]["make"].pop("accuracy")
    assert convert_key_errors(doc) == [
        "variant multihead.int8: missing key 'bytes'", "variant multihead.int8: unknown key 'size_bytes'",
        "variant multihead.int8 check head 'make': missing key 'accuracy'",
        "variant multihead.int8 check head 'make': unknown key 'acc'"]
