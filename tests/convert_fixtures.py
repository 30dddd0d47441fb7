"""Tiny datasets and run folders for the conversion tests, built exactly per the team contract.

A dataset: 32 px PNGs whose colour says ``make`` and whose stripe says ``type``, labels.csv with
train/val/test. A run: config.json, schema.json, train.json and models/<variant>.keras with one
input ``image`` (float32 RGB 0..255) and dict outputs named by head (``joint`` for joint).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from edge.contract.schema import LabelSchema

MAKES = ("audi", "bmw", "fiat")
TYPES = ("sedan", "suv")
COLOURS = {"audi": (200, 40, 40), "bmw": (40, 200, 40), "fiat": (40, 40, 200)}


def make_dataset(root: Path, size: int = 32, per_combo: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A labelled folder: every (make, type) combination in every split, ``per_combo`` images each."""
    per_combo = per_combo or {"train": 4, "val": 1, "test": 3}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for split, n in per_combo.items():
        for make in MAKES:
            for typ in TYPES:
                for i in range(n):
                    img = rng.integers(0, 60, (size, size, 3)).astype(np.int32) + np.array(COLOURS[make])
                    if typ == "suv":
                        img[size // 3 : 2 * size // 3] += 50
                    name = f"{split}_{make}_{typ}_{i}.png"
                    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name)
                    rows.append((name, split, make, typ))
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", "make", "type"])
        w.writerows(rows)
    return root


def dataset_schema(root: Path) -> LabelSchema:
    with open(root / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    return LabelSchema.from_labels(
        ["make", "type"],
        [(r["make"], r["type"]) for r in rows],
        [(r["make"], r["type"]) for r in rows if r["split"] == "train"],
    )


def tiny_model(outputs: dict[str, int], size: int = 32, seed: int = 0, name: str = "tiny"):
    """Input ``image`` -> rescale -> conv -> pool -> one softmax Dense per output (dict outputs).

    Head kernels are scaled up so random-weight predictions have clear top-1 margins (a parity
    check on near-uniform outputs would only measure ties).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image", dtype="float32")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outs = {o: keras.layers.Dense(n, activation="softmax", name=o)(x) for o, n in outputs.items()}
    model = keras.Model(inp, outs, name=name)
    _sharpen_heads(model, list(outputs), 40.0)
    return model


def _sharpen_heads(model, names, factor: float = 6.0) -> None:
    for n in names:
        layer = model.get_layer(n)
        k, b = layer.get_weights()
        layer.set_weights([k * factor, b])


def build_models(approach: str, schema: LabelSchema, backbone: str, size: int, seed: int = 0,
                 backbone_kwargs: dict | None = None) -> dict:
    """``{stem: keras.Model}`` for an approach: ``tiny`` here, any other name through train.models."""
    if backbone != "tiny":
        from train.models import build_model

        models = build_model(approach, backbone, schema, (size, size), weights="none", seed=seed,
                             backbone_kwargs=backbone_kwargs)
        for m in models.values():
            _sharpen_heads(m, list(m.output.keys()))
        return models
    if approach == "multihead":
        return {"multihead": tiny_model({h.name: h.num_classes for h in schema.heads}, size, seed)}
    if approach == "joint":
        return {"joint": tiny_model({"joint": schema.num_combinations}, size, seed)}
    return {f"separate.{h.name}": tiny_model({h.name: h.num_classes}, size, seed + i)
            for i, h in enumerate(schema.heads)}


def make_run(
    run: Path,
    data: Path,
    approaches: tuple[str, ...] = ("multihead", "joint", "separate"),
    backbone: str = "tiny",
    size: int = 32,
    seed: int = 0,
    backbone_kwargs: dict | None = None,
) -> Path:
    """A run folder as train/ writes it (config.json, schema.json, train.json, models/)."""
    schema = dataset_schema(data)
    (run / "models").mkdir(parents=True, exist_ok=True)
    schema.save(run / "schema.json")
    variants = {}
    for approach in approaches:
        files = []
        for stem, model in build_models(approach, schema, backbone, size, seed, backbone_kwargs).items():
            model.save(run / "models" / f"{stem}.keras")
            files.append(f"models/{stem}.keras")
        variants[approach] = {"approach": approach, "files": files}
    config = {"data": str(data), "backbone": backbone, "image_size": [size, size], "weights": "none"}
    (run / "config.json").write_text(json.dumps(config))
    (run / "train.json").write_text(json.dumps({**config, "variants": variants}))
    return run
