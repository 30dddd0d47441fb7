"""int8 against float32 on a model whose outputs are sharp, so a tolerance means something.

The edge fixtures' models are untrained: their probabilities sit 0.04-0.08 from uniform, so
"int8 within 0.04 of float32" holds for almost any pair of models. Here a two-head model is trained
(a few seconds) until it is confident on the test images, converted to float32 and full int8
(calibrated on train images, uint8 input and outputs, as convert/ does), and both files run through
the edge runtime (card, signature outputs, dequantisation). The tolerance is then a small fraction
of the signal, and top-1 must agree.
"""

from __future__ import annotations

import numpy as np
import pytest
from edge_fixtures import card_for, input_spec

from convert.tflite import DENSE_PER_CHANNEL
from edge.contract.card_archive import write_model
from edge.runtime.predict import Predictor
from edge.runtime.variants import discover
from tests import train_fixtures

HEADS = ("make", "type")
SIZE = 32
MAX_ABS_DIFF = 0.03
"""Largest |int8 - float32| probability allowed: about 12 output steps of 1/256, under 5 % of the
signal (below: every head's mean top-1 probability is >= 0.9, i.e. >= 0.57 above uniform 1/3)."""


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{'schema', 'test': Arrays, 'keras': model, 'predictors': {precision: Predictor}}."""
    import keras
    import tensorflow as tf

    schema, splits = train_fixtures.make_arrays(n=192, size=SIZE, seed=0)
    # The model must not depend on the tests before this one: an in-process training run switches
    # op determinism on for the whole process (it cannot be switched off), so switch it on here too.
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = {h: keras.layers.Dense(len(schema.head(h).classes), activation="softmax", name=h)(x) for h in HEADS}
    model = keras.Model(inp, outputs)
    model.compile(keras.optimizers.Adam(0.01), loss={h: "sparse_categorical_crossentropy" for h in HEADS})
    train = splits["train"]
    model.fit(train.images.astype(np.float32), {h: train.labels[h] for h in HEADS}, epochs=60, batch_size=32,
              verbose=0)

    out = tmp_path_factory.mktemp("sharp")
    calibration = train.images.astype(np.float32)
    for precision in ("float32", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if precision == "int8":
            def representative_images():
                for img in calibration:
                    yield [img[None]]

            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative_images
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            conv.inference_output_type = tf.uint8
            conv._experimental_disable_per_channel_quantization_for_dense_layers = not DENSE_PER_CHANNEL
        tfl = conv.convert()
        card = card_for("multihead", "multihead", HEADS, {h: h for h in HEADS}, input_spec(tfl, SIZE), precision,
                        schema=schema)
        write_model(out / f"multihead.{precision}.tflite", tfl, card)
    found = discover(out)
    test = splits["test"]
    return {"schema": schema, "test": test, "keras": model,
            "predictors": {p: Predictor(found[f"multihead.{p}"]) for p in ("float32", "int8")}}


def _probs(sharp: dict, precision: str) -> dict[str, np.ndarray]:
    return sharp["predictors"][precision].predict_array(sharp["test"].images)


def test_the_model_is_sharp_and_right(sharp) -> None:
    """The precondition that gives the tolerance below its meaning."""
    test = sharp["test"]
    assert test.n >= 30
    probs = _probs(sharp, "float32")
    for h in HEADS:
        assert probs[h].max(axis=1).mean() >= 0.9, h
        assert (probs[h].argmax(axis=1) == test.labels[h]).mean() >= 0.9, h


def test_float32_file_equals_keras(sharp) -> None:
    keras_out = sharp["keras"].predict(sharp["test"].images.astype(np.float32), verbose=0)
    probs = _probs(sharp, "float32")
    for h in HEADS:
        np.testing.assert_allclose(probs[h], keras_out[h], atol=1e-5)


def test_int8_agrees_with_float32_top1_and_within_a_small_fraction_of_the_signal(sharp) -> None:
    f, q = _probs(sharp, "float32"), _probs(sharp, "int8")
    for h in HEADS:
        assert q[h].shape == f[h].shape and q[h].dtype == np.float32
        diff = np.abs(q[h] - f[h]).max()
        signal = (f[h].max(axis=1) - 1 / f[h].shape[1]).mean()
        assert diff <= MAX_ABS_DIFF, f"{h}: int8 differs from float32 by {diff:.4f}"
        assert diff <= 0.05 * signal, f"{h}: difference {diff:.4f} against a signal of {signal:.3f}"
        assert np.array_equal(q[h].argmax(axis=1), f[h].argmax(axis=1)), h

