"""Empty scenes: the synthetic generator's backgrounds, lighting and noise without the car, labelled
with one "nothing here" class on every head. Merged into a dataset (``python -m datasets merge``),
they train a model that says "no car" instead of naming a make for an empty gate
(``polyhead-edge live --nothing-label none``; docs/edge.md, "Empty scenes"). An option only: the
default run never draws them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.folder import DatasetError, write_labels_csv
from datasets.synth import HEADS, JPEG_QUALITY, SUPERSAMPLE, _background, lit_and_noisy

NOTHING_LABEL = "none"


def empty_scene(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """One scene as ``datasets.synth.render_image`` draws it, without the car: (S, S, 3) uint8."""
    big = image_size * SUPERSAMPLE
    img = Image.fromarray(_background(rng, big, float(rng.uniform(0.45, 0.7)))).reduce(SUPERSAMPLE)
    return lit_and_noisy(rng, img, image_size)


def write_backgrounds(out: str | os.PathLike, num_images: int = 600, image_size: int = 128, seed: int = 1,
                      label: str = NOTHING_LABEL, heads: tuple[str, ...] = HEADS) -> Path:
    """A dataset folder of ``num_images`` empty scenes labelled ``label`` on every head, split
    80/10/10 into train/val/test (images/, labels.csv)."""
    if num_images < 1:
        raise DatasetError(f"--num-images must be at least 1. Received: num_images={num_images}")
    if not label or "," in label:
        raise DatasetError(f"the background label must be a non-empty word. Received: label={label!r}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        name = f"images/empty{i:06d}.jpg"
        Image.fromarray(empty_scene(rng, image_size)).save(out / name, "JPEG", quality=JPEG_QUALITY)
        rows.append((name, "train" if i % 10 < 8 else "val" if i % 10 == 8 else "test", [label] * len(heads)))
    write_labels_csv(out, heads, rows)
    return out
