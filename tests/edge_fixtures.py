"""Tiny .tflite deployments and images for the edge tests, made with the main env's TensorFlow.

Used in two ways:
- as a module by tests/test_edge*.py (``edge_models`` pytest fixture: built once per session);
- as a script, ``.venv/bin/python tests/edge_fixtures.py OUT``, writing ``OUT/models/*.tflite``
  and ``OUT/images/`` (+ labels.csv), so the tflite-runtime 2.14 env (no TensorFlow) can test the
  same files: it finds them through the ``POLYHEAD_EDGE_FIXTURES`` environment variable;
- ``--target OUT``: the MobileNetV2-sized int8 deployment the edge targets are measured on.

TensorFlow is imported inside functions only, so this module imports fine without it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.contract.card import InputSpec, ModelCard  # noqa: E402
from edge.contract.card_archive import write_model  # noqa: E402
from edge.contract.schema import LabelSchema  # noqa: E402

FIXTURES_ENV = "POLYHEAD_EDGE_FIXTURES"
SIZE = 32
HEADS = ("make", "type")
MAKES = ("audi", "bmw", "ford", "toyota")
TYPES = ("sedan", "suv", "van")
# Train combinations: every make/type pair except two (the joint model can never output those).
COMBOS = tuple((m, t) for m in MAKES for t in TYPES if (m, t) not in {("audi", "van"), ("toyota", "sedan")})
SCHEMA = LabelSchema.from_labels(HEADS, [(m, t) for m in MAKES for t in TYPES], COMBOS)
MODEL_FILES = (
    "multihead.float32.tflite",
    "multihead.int8.tflite",
    "joint.float32.tflite",
    "joint.int8.tflite",
    "separate.make.float32.tflite",
    "separate.type.float32.tflite",
)


def _tiny_keras(outputs: dict[str, int], seed: int, size: int = SIZE):
    """A small conv net with named softmax heads and dict outputs, like train/ builds them."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    heads = {name: keras.layers.Dense(n, activation="softmax", name=name)(x) for name, n in outputs.items()}
    return keras.Model(inp, heads)


def convert(model, int8: bool, size: int = SIZE, seed: int = 0, dense_per_channel: bool = True) -> bytes:
    """TF 2.21 conversion: float32, or full int8 with uint8 input and uint8 outputs. Dense weights
    per channel is TF's default (a file from elsewhere); per tensor is what polyhead's converter
    writes (``convert.tflite.DENSE_PER_CHANNEL``)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(seed)

        def representative_images():
            for _ in range(8):
                yield [rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv._experimental_disable_per_channel_quantization_for_dense_layers = not dense_per_channel
        conv.representative_dataset = representative_images
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return conv.convert()


def input_spec(tflite: bytes, size: int = SIZE) -> InputSpec:
    """The card's input, read from the converted model (the quantisation TF chose)."""
    from edge.runtime.interpreter import load_interpreter_class

    cls = load_interpreter_class()[0]
    runner = cls(model_content=tflite).get_signature_runner()
    d = runner.get_input_details()["image"]
    dtype = np.dtype(d["dtype"]).name
    if dtype == "float32":
        return InputSpec("image", size, size, 3, "float32")
    scale, zero = d["quantization"]
    return InputSpec("image", size, size, 3, dtype, float(scale), int(zero))


def card_for(variant: str, approach: str, heads: tuple[str, ...], outputs: dict[str, str],
             spec: InputSpec, precision: str, schema: LabelSchema = SCHEMA) -> ModelCard:
    import tensorflow as tf

    return ModelCard(variant=variant, approach=approach, schema=schema, heads=heads, outputs=outputs,
                     input=spec, backbone="tiny", precision=precision, converter_version=tf.__version__,
                     tensorflow_version=tf.__version__)


def build_models(out: str | os.PathLike, size: int = SIZE, dense_per_channel: bool = True,
                 files: tuple[str, ...] = MODEL_FILES) -> Path:
    """Write the deployment files ``files`` (default: every one in MODEL_FILES) into ``out`` (a
    folder); return it. ``dense_per_channel`` as in ``convert``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = {"make": len(MAKES), "type": len(TYPES)}
    multihead = _tiny_keras(n, seed=1, size=size)
    joint = _tiny_keras({"joint": SCHEMA.num_combinations}, seed=2, size=size)
    for precision in ("float32", "int8"):
        for name, model, approach, heads, outputs in (
            ("multihead", multihead, "multihead", HEADS, {"make": "make", "type": "type"}),
            ("joint", joint, "joint", HEADS, {"joint": "joint"}),
        ):
            if f"{name}.{precision}.tflite" not in files:
                continue
            tfl = convert(model, precision == "int8", size, dense_per_channel=dense_per_channel)
            card = card_for(name, approach, heads, outputs, input_spec(tfl, size), precision)
            write_model(out / f"{name}.{precision}.tflite", tfl, card)
    for i, head in enumerate(HEADS):
        if f"separate.{head}.float32.tflite" not in files:
            continue
        model = _tiny_keras({head: n[head]}, seed=3 + i, size=size)
        tfl = convert(model, False, size)
        card = card_for("separate", "separate", (head,), {head: head}, input_spec(tfl, size), "float32")
        write_model(out / f"separate.{head}.float32.tflite", tfl, card)
    return out


def make_images(out: str | os.PathLike, n: int = 6, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """``n`` labelled images (JPEG and PNG) plus labels.csv in the datasets stage's format."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["image,split,make,type"]
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        name = f"img{i}.{'jpg' if i % 2 == 0 else 'png'}"
        Image.fromarray(arr).save(out / name)
        rows.append(f"{name},test,{MAKES[i % len(MAKES)]},{TYPES[i % len(TYPES)]}")
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    return out


def build_target(out: str | os.PathLike, n_images: int = 64) -> Path:
    """The issue's benchmark deployment: MobileNetV2 (weights=None, 224 px, avg pooling) with two Dense
    heads, full int8 with uint8 input (random calibration), and ``n_images`` 500x375 photo-like JPEGs
    with a labels.csv. Minutes of CPU: for measuring the targets, not for the test suite."""
    import keras
    from PIL import Image

    out = Path(out)
    keras.utils.set_random_seed(0)
    inp = keras.Input((224, 224, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    base = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, include_top=False, pooling="avg")
    f = base(x)
    model = keras.Model(inp, {"make": keras.layers.Dense(len(MAKES), activation="softmax", name="make")(f),
                              "type": keras.layers.Dense(len(TYPES), activation="softmax", name="type")(f)})
    tfl = convert(model, True, 224)
    card = card_for("multihead", "multihead", HEADS, {"make": "make", "type": "type"}, input_spec(tfl, 224), "int8")
    write_model(out / "models" / "multihead.int8.tflite", tfl, card.with_updates(backbone="mobilenet_v2"))
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    rows = ["image,split,make,type"]
    for i in range(n_images):  # smooth gradients + noise: decodes like a photo, not like flat colour
        arr = (rng.uniform(0, 255, 3) + 60 * np.sin(xx[..., None] / rng.uniform(10, 60) + rng.uniform(0, 6, 3))
               + 60 * np.cos(yy[..., None] / rng.uniform(10, 60)) + rng.normal(0, 12, (375, 500, 3)))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(images / f"car{i:03d}.jpg", quality=90)
        rows.append(f"car{i:03d}.jpg,test,{MAKES[i % len(MAKES)]},{TYPES[i % len(TYPES)]}")
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    return out


def fixtures_dir(base: str | os.PathLike) -> Path:
    """``base`` holding ``models/`` and ``images/``: the files named by the env var if set, else built."""
    given = os.environ.get(FIXTURES_ENV)
    if given:
        return Path(given)
    base = Path(base)
    build_models(base / "models")
    make_images(base / "images")
    return base


if __name__ == "__main__":
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.argument("out", required=False, type=click.Path(file_okay=False))
    @click.option("--target", is_flag=True, help="the MobileNetV2 int8 benchmark deployment (minutes), "
                                                 "not the tiny test one (seconds)")
    def main(out: str | None, target: bool) -> None:
        """Write a test deployment (models/ and images/) into OUT."""
        if target:
            click.echo(build_target(Path(out or "build/edge-target")))
            return
        folder = Path(out or "build/edge-fixtures")
        build_models(folder / "models")
        make_images(folder / "images")
        click.echo(folder)

    main()


_BUILT: dict[str, Path] = {}


def _pytest_fixtures():
    """Define the pytest fixture lazily so the script use does not need pytest."""
    import pytest

    @pytest.fixture(scope="session", name="edge_fx")
    def edge_fx_fixture(tmp_path_factory) -> Path:
        """A folder with ``models/`` (every MODEL_FILES deployment) and ``images/`` (+ labels.csv).

        Test modules import this fixture, so pytest sees one definition per module: the folder is
        cached here to build the models once per session all the same."""
        if "dir" not in _BUILT:
            if not os.environ.get(FIXTURES_ENV):
                try:
                    import tensorflow  # noqa: F401
                except ImportError:
                    pytest.skip(f"no TensorFlow here to make models, and {FIXTURES_ENV} is not set")
            _BUILT["dir"] = fixtures_dir(tmp_path_factory.mktemp("edge-fx"))
        return _BUILT["dir"]

    return edge_fx_fixture


try:
    edge_fx_fixture = _pytest_fixtures()
except ImportError:  # running as a script without pytest
    pass
