"""Fast tests (no TensorFlow) of the conversion's tables and shared helpers: precision and approach
specs, model names, joint decoding, "every head right", and convert.json's variant summary."""

from __future__ import annotations

import numpy as np
import pytest

from convert.errors import ConvertError
from edge.contract.schema import LabelSchema

SCHEMA = LabelSchema.from_labels(
    ["make", "body.type"],  # a dotted head name: model names must still read back
    [("audi", "suv"), ("bmw", "sedan"), ("audi", "sedan"), ("fiat", "suv")],
    [("audi", "suv"), ("bmw", "sedan"), ("fiat", "suv")],
)


def test_spec_tables_name_exactly_the_cards_precisions_and_approaches():
    from convert.specs import APPROACH_SPECS, PRECISION_SPECS
    from edge.contract.card import APPROACHES, PRECISIONS

    assert tuple(PRECISION_SPECS) == PRECISIONS
    assert tuple(APPROACH_SPECS) == APPROACHES


def test_resolve_names_the_value_received_and_the_known_ones():
    from convert.specs import resolve_approach, resolve_precision

    assert resolve_precision("int8").calibrated and resolve_precision("int8").input_dtype == "uint8"
    assert resolve_precision("float32").min_agreement == 0.995 and not resolve_precision("float32").optimise
    assert resolve_precision("float16").weight_dtype == "float16"
    assert [p for p in ("float32", "float16", "dynamic", "int8") if resolve_precision(p).warn_on_drop] == [
        "dynamic", "int8"]
    for resolve, bad in ((resolve_precision, "int4"), (resolve_approach, "two-model")):
        with pytest.raises(ConvertError) as e:
            resolve(bad)
        assert "\n" not in str(e.value) and repr(bad) in str(e.value) and "Known" in str(e.value)


def test_settings_record_is_unchanged_so_earlier_files_stay_fresh():
    """convert.json's ``settings`` decide whether a file is reconverted: their keys must not drift."""
    from convert.tflite import settings_for

    assert settings_for("float32", 64, 3).to_dict() == {"precision": "float32", "dense_per_channel": False}
    assert settings_for("dynamic").to_dict() == {"precision": "dynamic", "dense_per_channel": False}
    assert settings_for("int8", 64, 3).to_dict() == {
        "precision": "int8", "calibration_images": 64, "calibration_seed": 3, "int8_output_dtype": "uint8",
        "dense_per_channel": False}


def test_model_names_round_trip_and_match_training():
    from convert.specs import APPROACH_SPECS
    from edge.contract.approaches import model_stem, split_model_stem
    from train.models import model_units

    for approach, spec in APPROACH_SPECS.items():
        units = spec.units(SCHEMA)
        trained = model_units(approach, SCHEMA)
        assert [u.stem for u in units] == [t.name for t in trained]  # one naming for train and convert
        assert [spec.output_keys(u.heads) for u in units] == [t.outputs for t in trained]
        for u in units:
            approach_back, head = split_model_stem(u.stem)
            assert approach_back == approach and model_stem(approach, head) == u.stem
    assert split_model_stem("separate.body.type") == ("separate", "body.type")
    for bad in ("mystery", "separate", "multihead.make", "joint.x", ""):
        with pytest.raises(ValueError, match="unknown model name"):
            split_model_stem(bad)
    with pytest.raises(ValueError):
        model_stem("separate")


def test_tflite_names_read_back_to_their_stem():
    from artifacts.layout import tflite_name, tflite_stem

    assert tflite_name("separate.body.type", "int8") == "edge/separate.body.type.int8.tflite"
    assert tflite_stem(tflite_name("separate.body.type", "int8")) == "separate.body.type"


def test_head_probs_decodes_joint_and_passes_heads_through():
    joint = np.array([[0.5, 0.3, 0.2]], np.float32)  # combos sorted: audi/suv, bmw/sedan, fiat/suv
    decoded = SCHEMA.head_probs({"joint": joint})
    np.testing.assert_allclose(decoded["make"], [[0.5, 0.3, 0.2]])  # audi, bmw, fiat
    np.testing.assert_allclose(decoded["body.type"], [[0.3, 0.7]])  # sedan, suv
    heads = {"make": np.eye(3, dtype=np.float32)}
    assert SCHEMA.head_probs(heads).keys() == {"make"} and SCHEMA.head_probs(heads)["make"] is heads["make"]


def test_all_heads_right_known_answer():
    from edge.contract.schema import all_heads_right

    probs = {"a": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), "b": np.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])}
    labels = {"a": np.array([0, 1, 1]), "b": np.array([1, 1, 0])}
    assert all_heads_right(probs, labels, ["a", "b"]).tolist() == [True, False, False]
    assert all_heads_right(probs, labels, ["a"]).tolist() == [True, True, False]


def _file(variant: str, precision: str, heads: list[str], check: dict) -> dict:
    return {"variant": variant, "approach": variant, "precision": precision, "heads": heads, "bytes": 10,
            "check": check, "warnings": [], "errors": []}


def test_summary_keeps_unchanged_variants_checks_from_the_previous_document():
    """The in-memory half of the convert.json bug: the previous variants come in as an argument."""
    from convert.records import ConvertVariant
    from convert.summary import summarise
    from edge.io import key_errors

    file_check = {"n": 2, "heads": {}, "joint_accuracy": None}
    device = {"n": 2, "heads": {}, "joint_accuracy": 0.5, "runtime": "edge.runtime.predict.Predictor"}
    sep32 = ["edge/separate.body.type.float32.tflite", "edge/separate.make.float32.tflite"]
    files = {}
    for precision in ("float32", "int8"):
        for head in ("body.type", "make"):
            files[f"edge/separate.{head}.{precision}.tflite"] = _file("separate", precision, [head], file_check)
    doc = {"files": files, "warnings": [], "errors": []}
    previous = {"separate.float32": {"files": sep32, "check": {**device, "joint_accuracy": 0.25}},
                "separate.int8": {"files": ["old"], "check": device}}
    calls = []

    def device_check(vid, names):
        calls.append(vid)
        return device

    summarise(doc, SCHEMA, previous, {"separate.int8"}, device_check)
    assert doc["variants"]["separate.float32"]["check"]["joint_accuracy"] == 0.25  # kept, not re-measured
    assert doc["variants"]["separate.int8"]["check"] is device and calls == ["separate.int8"]
    assert [e for v in doc["variants"].values() for e in key_errors(v, ConvertVariant)] == []
    summarise(doc, SCHEMA, {"separate.float32": {"files": ["other"], "check": device}}, set(), None)
    assert "check" not in doc["variants"]["separate.float32"]  # other files: the old check does not apply


def test_convert_imports_nothing_from_train():
    """convert reads what train wrote through artifacts/ and edge/ only (no import, not even a lazy one)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "convert"
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {n}" for n in names if n == "train" or n.startswith("train.")]
    assert not found, found


def test_the_card_and_training_read_the_one_approach_table():
    from edge.contract.approaches import APPROACH_SPECS, PER_HEAD_APPROACHES
    from edge.contract.card import APPROACHES
    from train.models import model_units

    assert APPROACHES == tuple(APPROACH_SPECS) and PER_HEAD_APPROACHES == ("separate",)
    for name, spec in APPROACH_SPECS.items():
        assert [(u.name, u.outputs) for u in model_units(name, SCHEMA)] == [
            (u.stem, u.outputs) for u in spec.units(SCHEMA)]
