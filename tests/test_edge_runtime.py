"""edge.runtime.model, edge.runtime.predict, edge.runtime.variants and edge.runtime.labels on real .tflite files made by TF 2.21. Runs under ai-edge-litert (main env) and,
through tests/test_edge_legacy.py, under tflite-runtime 2.14 + numpy<2 on the same files."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import HEADS, MAKES, SCHEMA, TYPES, edge_fx_fixture  # noqa: F401

from edge.contract.card import CardError
from edge.contract.card_archive import read_card, strip_card, write_model
from edge.errors import ModelError
from edge.runtime.interpreter import load_interpreter_class
from edge.runtime.labels import read_labels_csv
from edge.runtime.model import Model
from edge.runtime.predict import Predictor, iter_predictions
from edge.runtime.variants import discover, select_variant

VARIANTS = ("joint.float32", "joint.int8", "multihead.float32", "multihead.int8", "separate.float32")


@pytest.fixture(scope="module")
def variants(edge_fx):
    return discover(edge_fx / "models")


@pytest.fixture(scope="module")
def predictors(variants):
    return {vid: Predictor(v) for vid, v in variants.items()}


def _batch(n=3, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_runtime_is_the_expected_one():
    _, name, version = load_interpreter_class()
    expected = os.environ.get("POLYHEAD_EXPECT_RUNTIME")
    if expected:
        assert name == expected
    assert name in ("ai-edge-litert", "tflite-runtime") and version


def test_discover_groups_files_into_variants(variants):
    assert sorted(variants) == list(VARIANTS)
    sep = variants["separate.float32"]
    assert [f.name for f in sep.files] == ["separate.make.float32.tflite", "separate.type.float32.tflite"]
    assert sep.heads == HEADS and sep.approach == "separate"
    assert variants["joint.int8"].approach == "joint"
    assert select_variant(variants, None).id == "multihead.int8"  # several: multihead, int8 first
    no_multihead = {k: v for k, v in variants.items() if v.approach != "multihead"}
    with pytest.raises(CardError, match="none is multihead, choose one with --variant"):
        select_variant(no_multihead, None)
    floats = {k: v for k, v in variants.items() if k != "multihead.int8"}
    assert select_variant(floats, None).id == "multihead.float32"
    assert select_variant(variants, "separate").id == "separate.float32"


def test_discover_single_file_of_separate_answers_its_head(edge_fx):
    (v,) = discover(edge_fx / "models" / "separate.type.float32.tflite").values()
    assert v.heads == ("type",)
    probs = Predictor(v).predict_array(_batch(1))
    assert list(probs) == ["type"]


@pytest.mark.parametrize("vid", VARIANTS)
def test_predict_array_gives_probabilities_per_head(predictors, vid):
    p = predictors[vid]
    probs = p.predict_array(_batch())
    assert list(probs) == list(HEADS)
    assert probs["make"].shape == (3, len(MAKES)) and probs["type"].shape == (3, len(TYPES))
    for a in probs.values():
        assert a.dtype == np.float32
        np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=0.02)  # int8 softmax steps are 1/256
    assert p.num_threads == 1 and p.runtime in ("ai-edge-litert", "tflite-runtime")


def test_int8_outputs_are_dequantised(predictors):
    """The uint8 outputs come back as probabilities on the output scale's grid (softmax: 1/256).

    These fixture models are untrained (outputs 0.04-0.08 from uniform), so closeness to float32 says
    little here; tests/test_int8_sharp.py compares int8 with float32 on a confident model."""
    x = _batch(4, seed=1)
    for approach in ("multihead", "joint"):
        f = predictors[f"{approach}.float32"].predict_array(x)
        q = predictors[f"{approach}.int8"].predict_array(x)
        for h in HEADS:
            assert q[h].dtype == np.float32 and q[h].shape == f[h].shape
            if approach == "multihead":  # a joint head is a sum of dequantised scores, not one of them
                steps = q[h] * 256
                np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
            np.testing.assert_allclose(q[h], f[h], atol=0.04)


def test_uint8_input_goes_in_raw(predictors):
    model = predictors["multihead.int8"].models[0]
    assert model.input_dtype == np.uint8 and model._lut is None  # scale ~1, zero 0: no conversion
    x = _batch(1)[0]
    fed = model.set_input(x)
    assert fed.shape == (1, 32, 32, 3) and np.shares_memory(fed, x)  # no copy before the runner's own
    strided = _batch(1, size=64)[0, ::2, ::2]
    assert np.array_equal(model.set_input(strided)[0], strided)


def test_joint_is_decoded_with_the_schema(predictors):
    p = predictors["joint.float32"]
    x = _batch(2, seed=2)
    raw = np.stack([p.models[0].run(img)["joint"] for img in x])
    assert raw.shape == (2, SCHEMA.num_combinations)
    expected = SCHEMA.decode_joint(raw)
    got = p.predict_array(x)
    for h in HEADS:
        np.testing.assert_allclose(got[h], expected[h], rtol=1e-6)
    # Known answers: all of the joint mass on combination k decodes to exactly that combination's
    # labels, with probability 1; so the winners are the train combinations, and ('audi', 'van'),
    # never seen in training, is never one of them.
    winners = set()
    for k, combo in enumerate(SCHEMA.combinations):
        one_hot = np.zeros(SCHEMA.num_combinations, np.float32)
        one_hot[k] = 1.0
        pred = p.to_prediction(SCHEMA.decode_joint(one_hot), "x.png")
        labels = tuple(pred.heads[h].label for h in HEADS)
        assert labels == combo and all(pred.heads[h].score == 1.0 for h in HEADS), (k, combo, labels)
        winners.add(labels)
    assert winners == set(SCHEMA.combinations) and ("audi", "van") not in winners


def test_labels_and_top_k(predictors, edge_fx):
    p = predictors["multihead.float32"]
    img = next((edge_fx / "images").glob("*.jpg"))
    pred = p.predict_file(img, top_k=3)
    assert pred.ok and list(pred.heads) == list(HEADS)
    make = pred.heads["make"]
    assert len(make.top_k) == 3 and make.top_k[0] == (make.label, make.score)
    scores = [s for _, s in make.top_k]
    assert scores == sorted(scores, reverse=True) and make.label in MAKES
    assert len(p.predict_file(img, top_k=99).heads["type"].top_k) == len(TYPES)
    d = pred.to_dict()
    assert d["heads"]["make"]["label"] == make.label


def test_bad_image_is_an_error_record_and_the_rest_go_on(predictors, edge_fx, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    good = sorted((edge_fx / "images").glob("*.png"))[:2]
    preds = predictors["separate.float32"].predict_files([good[0], bad, good[1]])
    assert [x.ok for x in preds] == [True, False, True]
    assert "bad.jpg" in preds[1].error and "\n" not in preds[1].error


def test_prefetch_pipeline_matches_sequential(predictors, edge_fx, tmp_path):
    p = predictors["joint.int8"]
    paths = sorted((edge_fx / "images").glob("img*")) + [tmp_path / "missing.png"]
    seq = p.predict_files(paths, top_k=2)
    piped = list(iter_predictions(p, paths, top_k=2, prefetch=2))
    assert [x.to_dict() for x in piped] == [x.to_dict() for x in seq]
    assert not piped[-1].ok
    gen = iter_predictions(p, paths * 50)  # closing early stops the thread
    next(gen)
    threads = [t for t in threading.enumerate() if t.name == "polyhead-prefetch"]
    assert len(threads) == 1 and threads[0].is_alive()
    gen.close()
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()


def test_threads_are_passed(variants):
    p = Predictor(variants["multihead.float32"], num_threads=2)
    assert p.num_threads == 2 and p.info()["threads"] == 2
    assert p.predict_array(_batch(1))["make"].shape == (1, len(MAKES))


# -- the card is checked against the model's real signature ---------------------------------------


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    card = read_card(src).with_updates(**changes)
    write_model(dst, strip_card(src.read_bytes()), card)
    return dst


@pytest.mark.parametrize("change, match", [
    ({"outputs": {"make": "type", "type": "make"}}, "scores but the card lists"),
    ({"outputs": {"make": "output_0", "type": "type"}}, "is not a signature output"),
    ({"signature": "serve"}, "not in the model"),
])
def test_card_not_matching_signature_is_one_line(edge_fx, tmp_path, change, match):
    path = _rewrite(edge_fx / "models" / "multihead.float32.tflite", tmp_path / "m.tflite", **change)
    with pytest.raises(CardError, match=match) as e:
        Model(path)
    assert "\n" not in str(e.value) and "m.tflite" in str(e.value)


def test_card_input_mismatch(edge_fx, tmp_path):
    from dataclasses import replace

    src = edge_fx / "models" / "multihead.int8.tflite"
    inp = read_card(src).input
    for new, match in ((replace(inp, height=64, width=64), "input shape"),
                       (replace(inp, name="pixels"), "signature's inputs"),
                       (replace(inp, dtype="int8"), "dtype"),
                       (replace(inp, scale=0.5), "quantisation")):
        with pytest.raises(CardError, match=match):
            Model(_rewrite(src, tmp_path / "x.tflite", input=new))


def test_class_list_length_must_match_output(edge_fx, tmp_path):
    from edge.contract.schema import LabelSchema

    schema = LabelSchema.from_labels(HEADS, [(m, t) for m in (*MAKES, "kia") for t in TYPES])
    path = _rewrite(edge_fx / "models" / "multihead.float32.tflite", tmp_path / "x.tflite", schema=schema)
    with pytest.raises(CardError, match="has 4 scores but the card lists 5"):
        Model(path)


def test_tampered_flatbuffer_is_one_line(edge_fx, tmp_path):
    src = edge_fx / "models" / "multihead.float32.tflite"
    data = bytearray(src.read_bytes())
    data[8:40] = os.urandom(32)  # corrupt the flatbuffer, keep the card
    (tmp_path / "t.tflite").write_bytes(bytes(data))
    with pytest.raises(CardError, match="does not match its card"):
        discover(tmp_path / "t.tflite")
    # With the card's checksum removed, the interpreter's own verifier refuses it: still one line.
    card = read_card(src)
    bad = tmp_path / "b.tflite"
    write_model(bad, b"TFL3" + os.urandom(200), card)
    with pytest.raises(ModelError) as e:
        Model(bad)
    assert "\n" not in str(e.value) and "b.tflite" in str(e.value)


def test_folder_with_a_bad_file(edge_fx, tmp_path):
    shutil.copy(edge_fx / "models" / "multihead.int8.tflite", tmp_path)
    (tmp_path / "junk.tflite").write_bytes(b"junk")
    with pytest.raises(CardError, match="junk.tflite"):
        discover(tmp_path)
    problems: list = []
    assert list(discover(tmp_path, problems)) == ["multihead.int8"]
    assert problems and problems[0][0].endswith("junk.tflite")


def test_input_quantisation_tables():
    from types import SimpleNamespace

    from edge.contract.card import InputSpec
    from edge.runtime.model import _input_lut

    def lut(**spec):
        return _input_lut(SimpleNamespace(input=InputSpec("image", 8, 8, **spec)), np.dtype(spec["dtype"]))

    assert lut(dtype="uint8", scale=1.0, zero_point=0) is None  # raw pixels go straight in
    assert lut(dtype="uint8", scale=0.9999493, zero_point=0) is None  # what TF 2.21 emits for 0..255
    q = lut(dtype="int8", scale=1.0, zero_point=-128)
    assert q.dtype == np.int8 and q[0] == -128 and q[255] == 127
    q = lut(dtype="int8", scale=2 / 255, zero_point=0, value_range=(-1.0, 1.0))
    assert q[0] in (-128, -127) and q[255] == 127
    f = lut(dtype="float32", value_range=(-1.0, 1.0))
    assert f.dtype == np.float32 and f[0] == -1.0 and f[255] == 1.0


def test_labels_csv_with_a_byte_order_mark_reads_as_the_datasets_stage_reads_it(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes("image,split,make,type\r\na.jpg,test,Aldor,SUV\r\n".encode("utf-8-sig"))
    heads, labels = read_labels_csv(csv_path)
    assert heads == ("make", "type")
    assert labels == {(tmp_path / "a.jpg").resolve(): ("Aldor", "SUV")}


def test_every_edge_error_is_a_one_line_polyhead_error():
    from edge.contract.card import CardError
    from edge.contract.schema import SchemaError
    from edge.errors import ModelError, PolyheadError

    for cls in (CardError, ModelError, SchemaError):
        assert issubclass(cls, PolyheadError)
    assert str(ModelError("a.tflite: bad\nforged line")) == "a.tflite: bad forged line"
