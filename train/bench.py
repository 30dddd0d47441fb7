"""Benchmark: head training on cached features vs fitting the frozen full model.

``feature_cache_speedup(...)`` is what ``make bench`` calls. Target (issue 4): for E epochs the
cached path is at least 0.8 x E times faster; its limit is E (one backbone pass instead of E).
``python -m train.bench --backbone mobilenet_v2 --image-size 96 --n-images 512 --epochs 5`` prints
one JSON record.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np


def feature_cache_speedup(
    backbone: str = "mobilenet_v2",
    image_size: int = 96,
    n_images: int = 512,
    epochs: int = 5,
    batch_size: int = 32,
    seed: int = 0,
    backbone_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Time E epochs of (a) the frozen full model and (b) backbone-once + heads on features.

    Random images and labels (2 heads); both paths see the same batches and start from the same
    weights. Returns seconds of each, the speed-up, the target (0.8 x E) and the largest head
    weight difference between the two results (they train the same model).
    """
    import keras

    from edge.contract.schema import LabelSchema
    from train.data import Arrays, steps_per_epoch, train_dataset
    from train.fit import FeatureCache, TrainConfig, _compile, fit_heads_on_features
    from train.models import BACKBONE_LAYER, build_unit, model_units

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_images, image_size, image_size, 3), dtype=np.uint8)
    makes, types = [f"m{i}" for i in range(6)], [f"t{i}" for i in range(4)]
    rows = [(makes[i % 6], types[(i // 6) % 4]) for i in range(n_images)]
    schema = LabelSchema.from_labels(("make", "type"), rows)
    enc = np.array([schema.encode(r) for r in rows], dtype=np.int32)
    arrays = Arrays(images, {"make": enc[:, 0], "type": enc[:, 1]},
                    np.array([schema.joint_index(r) for r in rows], dtype=np.int32))
    cfg = TrainConfig(data="-", out="-", backbone=backbone, approaches=("multihead",),
                      image_size=(image_size, image_size), batch_size=batch_size, epochs=epochs, seed=seed,
                      freeze_base=True, backbone_kwargs=dict(backbone_kwargs or {}),
                      compose="none")  # the same plain heads both ways: composition is not what this measures
    unit = model_units("multihead", schema)[0]

    full = build_unit(unit, backbone, schema, cfg.image_size, seed=seed, freeze_base=True,
                      backbone_kwargs=cfg.backbone_kwargs)
    _compile(full, cfg, unit.outputs)
    ds = train_dataset(images, arrays.targets(unit.outputs), batch_size, seed, 0, epochs)
    t0 = time.perf_counter()
    full.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch(n_images, batch_size),
             shuffle=False, verbose=0)
    full_s = time.perf_counter() - t0

    keras.backend.clear_session()
    cached = build_unit(unit, backbone, schema, cfg.image_size, seed=seed, freeze_base=True,
                        backbone_kwargs=cfg.backbone_kwargs)
    t0 = time.perf_counter()
    feats, extract_s = FeatureCache(batch_size).get(cached.get_layer(BACKBONE_LAYER), "train", images)
    fit_heads_on_features(cached, cfg, schema, unit.outputs, feats, arrays, None, None, epochs)
    cached_s = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(a - b))) for o in unit.outputs
               for a, b in zip(full.get_layer(o).get_weights(), cached.get_layer(o).get_weights(), strict=False))
    speedup = full_s / cached_s
    return {
        "backbone": backbone, "image_size": image_size, "n_images": n_images, "epochs": epochs,
        "batch_size": batch_size, "full_fit_s": round(full_s, 3), "feature_cache_s": round(cached_s, 3),
        "extract_s": round(extract_s, 3), "speedup": round(speedup, 2), "target": round(0.8 * epochs, 2),
        "meets_target": bool(speedup >= 0.8 * epochs), "max_head_weight_diff": diff,
    }


def main() -> None:
    import click

    from edge.errors import PolyheadError
    from edge.log import configure_logging

    @click.command()
    @click.option("--backbone", default="mobilenet_v2")
    @click.option("--image-size", default=96, type=int)
    @click.option("--n-images", default=512, type=int)
    @click.option("--epochs", default=5, type=int)
    @click.option("--batch-size", default=32, type=int)
    @click.option("--alpha", type=float)
    def cli(backbone: str, image_size: int, n_images: int, epochs: int, batch_size: int, alpha: float | None) -> None:
        """Print one JSON record: feature-cached vs frozen-full-model head training."""
        kw = {"alpha": alpha} if alpha is not None else {}
        configure_logging()
        try:
            record = feature_cache_speedup(backbone, image_size, n_images, epochs, batch_size, backbone_kwargs=kw)
        except PolyheadError as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps(record))

    cli()


if __name__ == "__main__":
    main()
