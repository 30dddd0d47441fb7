"""Tiny learnable datasets for the training tests (no network, no datasets.synth dependency).

``make`` is the colour of a shape, ``type`` its shape (bar orientation / box), drawn on noise.
One combination is held out of train/val/test and appears only in ``test_unseen``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.contract.schema import LabelSchema
from train.data import Arrays

MAKES = ("blue", "green", "red")
TYPES = ("box", "hbar", "vbar")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
HELD_OUT = ("red", "vbar")


def draw(make: str, kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
    c = np.array(COLOURS[make], dtype=np.uint8)
    s = size
    o = rng.integers(-s // 8, s // 8 + 1, 2)
    if kind == "box":
        y0, x0 = s // 4 + o[0], s // 4 + o[1]
        img[max(0, y0): y0 + s // 2, max(0, x0): x0 + s // 2] = c
    elif kind == "hbar":
        y0 = s // 2 - s // 8 + o[0]
        img[max(0, y0): y0 + s // 4, s // 10: s - s // 10] = c
    else:
        x0 = s // 2 - s // 8 + o[1]
        img[s // 10: s - s // 10, max(0, x0): x0 + s // 4] = c
    return img


def make_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(split, make, type) rows: 60/20/20 train/val/test of seen combos + held-out combo rows."""
    rng = np.random.default_rng(seed)
    combos = [(m, t) for m in MAKES for t in TYPES if (m, t) != HELD_OUT]
    rows = []
    for i in range(n):
        m, t = combos[i % len(combos)]
        r = rng.random()
        rows.append(("train" if r < 0.6 else "val" if r < 0.8 else "test", m, t))
    rows += [("test_unseen", *HELD_OUT)] * max(2, n // 16)
    return rows


def write_folder(root: Path, n: int = 48, size: int = 32, seed: int = 0) -> Path:
    """A dataset folder (images/*.png + labels.csv) per the contract."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    lines = ["image,split,make,type"]
    for i, (split, m, t) in enumerate(make_rows(n, seed)):
        name = f"images/{i:04d}.png"
        Image.fromarray(draw(m, t, size, rng)).save(root / name)
        lines.append(f"{name},{split},{m},{t}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def make_arrays(n: int = 96, size: int = 32, seed: int = 0) -> tuple[LabelSchema, dict[str, Arrays]]:
    """In-memory splits (schema, {split: Arrays}) of the same data, without files."""
    rng = np.random.default_rng(seed + 1)
    rows = make_rows(n, seed)
    schema = LabelSchema.from_labels(
        ("make", "type"), [(m, t) for _, m, t in rows], [(m, t) for s, m, t in rows if s == "train"]
    )
    out: dict[str, Arrays] = {}
    images = np.stack([draw(m, t, size, rng) for _, m, t in rows])
    for split in ("train", "val", "test", "test_unseen"):
        idx = [i for i, r in enumerate(rows) if r[0] == split]
        enc = [schema.encode(rows[i][1:]) for i in idx]
        out[split] = Arrays(
            images[idx],
            {h: np.array([e[j] for e in enc], dtype=np.int32) for j, h in enumerate(schema.head_names)},
            np.array([schema.joint_index(rows[i][1:]) for i in idx], dtype=np.int32),
        )
    return schema, out
