"""Built-in synthetic cars: 48 makes x 8 body types, drawn with Pillow, deterministic per seed.

The body type is the silhouette (sedan, SUV, coupe, ...). The make is a consistent visual identity
that survives 64-pixel inputs: a body colour family, a large badge shape on the door, a grille
pattern, an accent colour (badge, stripe, rims), wheel size and body height. Each make builds only
some types (108 make/type combinations, as many as the paper's Stanford Cars subset), so a joint
classifier and a multihead one see the same structure as on real cars.

Every image is drawn from its own random stream ``(seed, index)``: the bytes of image 17 do not
depend on how many worker processes drew the set, or on how many images were asked for.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets.folder import META_FILE, SPLITS, DatasetError, prepare_output, write_labels_csv
from edge.contract.catalogue import CATALOGUE_FILE, write_catalogue
from edge.io import atomic_write_json

TYPES = ("Sedan", "SUV", "Coupe", "Convertible", "Hatchback", "Wagon", "Van", "Pickup")
"""Body types, the ``type`` head. Stanford Cars imports use the same names."""

MAKES = (
    "Aldor", "Brava", "Corvane", "Dyneth", "Elbris", "Fennic", "Galvar", "Hestia",
    "Ilkar", "Jorvik", "Kestrel", "Lumina", "Marlow", "Norrin", "Orbis", "Pavona",
    "Quillon", "Rovena", "Saxon", "Tarvos", "Umbra", "Valen", "Wexley", "Xandor",
    "Yarrow", "Zephra", "Arden", "Bexley", "Cirrus", "Delmar", "Eskel", "Falco",
    "Grenn", "Halden", "Istra", "Juno", "Korrin", "Lyric", "Mistral", "Novak",
    "Osprey", "Pallas", "Quarry", "Rhodes", "Sable", "Talon", "Ursa", "Vesper",
)
"""The 48 fictional makes, the ``make`` head."""

HEADS = ("make", "type")
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
JPEG_QUALITY = 90
CATALOGUE_SEED = 20191106  # the catalogue (who builds what) is fixed; --seed varies the images
SUPERSAMPLE = 2  # drawn at twice the size then reduced: cheap antialiasing

# Twelve body colour families, far apart in hue or lightness so lighting changes keep them apart.
BODY_COLOURS = (
    (200, 30, 35), (235, 120, 20), (235, 205, 40), (125, 200, 40), (20, 100, 50), (20, 165, 165),
    (80, 160, 235), (25, 40, 125), (120, 50, 165), (225, 90, 170), (225, 225, 228), (35, 35, 38),
)
ACCENT_COLOURS = (
    (250, 250, 250), (15, 15, 15), (190, 190, 200), (230, 180, 40), (210, 20, 20), (30, 90, 230),
    (20, 200, 120), (250, 130, 0),
)
BADGES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "plus", "chevron")
GRILLES = ("horizontal", "vertical", "mesh", "dots", "solid")


@dataclass(frozen=True)
class MakeStyle:
    """The visual identity of one make: what stays the same on every car it builds."""

    name: str
    body: tuple[int, int, int]
    accent: tuple[int, int, int]
    badge: str
    grille: str
    wheel_scale: float
    height_scale: float
    stripe: bool
    types: tuple[str, ...]


@cache
def catalogue() -> tuple[MakeStyle, ...]:
    """The fixed make catalogue: 48 identities, 108 make/type combinations, types balanced (computed
    once, on first use)."""
    rng = np.random.default_rng(CATALOGUE_SEED)
    # 4 makes build 4 types, 12 build 3, 24 build 2 and 8 build one: 108 combinations.
    counts = [4] * 4 + [3] * 12 + [2] * 24 + [1] * 8
    rng.shuffle(counts)
    used = Counter({t: 0 for t in TYPES})
    styles = []
    for i, name in enumerate(MAKES):
        # (colour, badge) is unique per make; the four makes sharing a colour also differ in
        # grille and accent, so no two makes are told apart by one small cue only.
        colour, badge, band = i % 12, i // 6, i // 12
        order = sorted(TYPES, key=lambda t: (used[t], rng.random()))
        types = tuple(sorted(order[: counts[i]], key=TYPES.index))
        used.update(types)
        styles.append(
            MakeStyle(
                name=name,
                body=BODY_COLOURS[colour],
                accent=ACCENT_COLOURS[(band * 3 + i) % len(ACCENT_COLOURS)],
                badge=BADGES[badge],
                grille=GRILLES[(band + i % 3) % len(GRILLES)],
                wheel_scale=(0.88, 1.0, 1.14)[(i // 4) % 3],
                height_scale=(0.9, 1.0, 1.1)[(i * 7 // 3) % 3],
                stripe=bool((i // 3) % 2),
                types=types,
            )
        )
    return tuple(styles)


def combinations() -> tuple[tuple[str, str], ...]:
    """Every (make, type) the catalogue builds, sorted."""
    return tuple(sorted((m.name, t) for m in catalogue() for t in m.types))


# -- drawing --------------------------------------------------------------------------------------
# Silhouettes in car units: x from 0 (rear) to 1 (front), y up from the ground. ``body`` is the
# lower body, ``cabin`` the glasshouse, ``wheels`` the axle x positions.

_SHAPES: dict[str, dict] = {
    "Sedan": dict(length=1.0, ride=0.10, body=[(0, 0.10), (0, 0.27), (0.03, 0.30), (0.24, 0.31), (0.76, 0.30),
                                            (0.97, 0.27), (1, 0.20), (1, 0.10)],
                  cabin=[(0.22, 0.30), (0.35, 0.46), (0.62, 0.46), (0.75, 0.30)], wheels=(0.19, 0.80), r=0.085),
    "Coupe": dict(length=0.95, ride=0.09, body=[(0, 0.09), (0, 0.25), (0.05, 0.27), (0.72, 0.27), (0.97, 0.24),
                                              (1, 0.17), (1, 0.09)],
                  cabin=[(0.10, 0.27), (0.40, 0.40), (0.56, 0.40), (0.71, 0.27)], wheels=(0.19, 0.80), r=0.085),
    "Convertible": dict(length=0.95, ride=0.09, body=[(0, 0.09), (0, 0.25), (0.05, 0.27), (0.72, 0.27),
                                                    (0.97, 0.24), (1, 0.17), (1, 0.09)],
                        cabin=None, wheels=(0.19, 0.80), r=0.085),
    "Hatchback": dict(length=0.82, ride=0.11, body=[(0, 0.11), (0, 0.30), (0.72, 0.31), (0.96, 0.28), (1, 0.21),
                                                  (1, 0.11)],
                      cabin=[(0.02, 0.31), (0.08, 0.50), (0.52, 0.50), (0.72, 0.31)], wheels=(0.17, 0.82), r=0.09),
    "Wagon": dict(length=1.05, ride=0.10, body=[(0, 0.10), (0, 0.30), (0.76, 0.31), (0.97, 0.28), (1, 0.20),
                                              (1, 0.10)],
                  cabin=[(0.01, 0.31), (0.03, 0.48), (0.62, 0.48), (0.76, 0.31)], wheels=(0.18, 0.81), r=0.085),
    "SUV": dict(length=1.0, ride=0.16, body=[(0, 0.16), (0, 0.42), (0.75, 0.43), (0.98, 0.40), (1, 0.30),
                                           (1, 0.16)],
                cabin=[(0.02, 0.43), (0.05, 0.64), (0.62, 0.64), (0.75, 0.43)], wheels=(0.19, 0.80), r=0.115),
    "Van": dict(length=1.0, ride=0.11, body=[(0, 0.11), (0, 0.74), (0.03, 0.77), (0.76, 0.77), (0.93, 0.48),
                                           (1, 0.42), (1, 0.11)],
                cabin=[(0.70, 0.50), (0.70, 0.70), (0.77, 0.72), (0.90, 0.50)], wheels=(0.17, 0.80), r=0.09),
    "Pickup": dict(length=1.05, ride=0.15, body=[(0, 0.15), (0, 0.40), (0.42, 0.40), (0.42, 0.41), (0.75, 0.42),
                                              (0.98, 0.40), (1, 0.30), (1, 0.15)],
                   cabin=[(0.44, 0.41), (0.47, 0.63), (0.64, 0.63), (0.74, 0.41)], wheels=(0.18, 0.80), r=0.105),
}


def _shade(colour, factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * factor))) for c in colour)


def _badge_polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    def ring(n, radius, phase):
        return [(cx + radius * math.cos(phase + 2 * math.pi * k / n), cy + radius * math.sin(phase + 2 * math.pi * k / n))
                for k in range(n)]

    if kind == "square":
        return [(cx - r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy - r * 0.85), (cx + r * 0.85, cy + r * 0.85),
                (cx - r * 0.85, cy + r * 0.85)]
    if kind == "triangle":
        return ring(3, r * 1.15, -math.pi / 2)
    if kind == "diamond":
        return [(cx, cy - r * 1.15), (cx + r * 0.8, cy), (cx, cy + r * 1.15), (cx - r * 0.8, cy)]
    if kind == "hexagon":
        return ring(6, r, 0.0)
    if kind == "star":
        pts = []
        for k in range(10):
            rad = r * 1.2 if k % 2 == 0 else r * 0.5
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if kind == "plus":
        a, b = r * 1.05, r * 0.38
        return [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b),
                (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b),
                (cx - a, cy - b), (cx - b, cy - b)]
    if kind == "chevron":
        a = r * 1.1
        return [(cx - a, cy - a * 0.7), (cx, cy + a * 0.1), (cx + a, cy - a * 0.7), (cx + a, cy + 0.05 * a),
                (cx, cy + a * 0.9), (cx - a, cy + 0.05 * a)]
    return None  # circle


def _draw_badge(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill, outline) -> None:
    poly = _badge_polygon(kind, cx, cy, r)
    width = max(1, int(r * 0.18))
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=width)
    else:
        draw.polygon(poly, fill=fill, outline=outline, width=width)


def _draw_grille(draw: ImageDraw.ImageDraw, kind: str, box, accent, dark) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=dark)
    w, h = x1 - x0, y1 - y0
    lw = max(1, int(min(w, h) * 0.12))
    if kind == "horizontal":
        for k in range(1, 4):
            y = y0 + h * k / 4
            draw.line([(x0, y), (x1, y)], fill=accent, width=lw)
    elif kind == "vertical":
        for k in range(1, 4):
            x = x0 + w * k / 4
            draw.line([(x, y0), (x, y1)], fill=accent, width=lw)
    elif kind == "mesh":
        for k in range(1, 4):
            draw.line([(x0, y0 + h * k / 4), (x1, y0 + h * k / 4)], fill=accent, width=max(1, lw // 2))
            draw.line([(x0 + w * k / 4, y0), (x0 + w * k / 4, y1)], fill=accent, width=max(1, lw // 2))
    elif kind == "dots":
        rr = max(1.0, min(w, h) * 0.1)
        for i in range(1, 3):
            for j in range(1, 4):
                cx, cy = x0 + w * i / 3, y0 + h * j / 4
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=accent)
    else:  # solid: a frame in the accent colour
        draw.rectangle(box, outline=accent, width=lw * 2)


_ToPixels = Callable[[float, float], tuple[float, float]]
"""A point in car units (x from the rear, y up from the ground) -> pixels on the layer."""


def _draw_car(layer: Image.Image, style: MakeStyle, body_type: str, rng: np.random.Generator,
              x_rear: float, y_ground: float, length_px: float) -> None:
    """Draw one car facing right on an RGBA layer; the make's identity in colour, badge, grille."""
    shape = _SHAPES[body_type]
    draw = ImageDraw.Draw(layer)
    scale = length_px * shape["length"]
    hs = style.height_scale

    def pt(x, y):
        return (x_rear + x * scale, y_ground - y * scale * hs)

    body_colour = tuple(int(np.clip(c + rng.normal(0, 10), 0, 255)) for c in style.body)
    glass = tuple(int(v) for v in rng.integers(25, 70, 3))
    r_wheel = shape["r"] * style.wheel_scale * scale

    # Shadow on the ground first, so the car sits on it.
    sx0, sx1 = pt(-0.03, 0)[0], pt(1.03, 0)[0]
    draw.ellipse([sx0, y_ground - r_wheel * 0.25, sx1, y_ground + r_wheel * 0.25], fill=(0, 0, 0, 110))
    _draw_body(draw, body_type, pt, scale, body_colour, glass)
    _draw_make_details(draw, style, body_type, pt, scale)
    _draw_wheels(draw, shape["wheels"], pt, r_wheel, style.accent)


def _draw_body(draw: ImageDraw.ImageDraw, body_type: str, pt: _ToPixels,
               scale: float, body_colour: tuple[int, ...], glass: tuple[int, ...]) -> None:
    """The body, the cabin with its windows, and what sets a pickup, convertible or van apart."""
    shape = _SHAPES[body_type]
    dark = _shade(body_colour, 0.55)
    draw.polygon([pt(*p) for p in shape["body"]], fill=body_colour, outline=dark, width=max(1, int(scale * 0.006)))
    if body_type == "Pickup":
        # The open bed: a dark inner wall just under the bed rail.
        draw.rectangle([*pt(0.03, 0.38), *pt(0.40, 0.33)], fill=dark)
    cabin = shape["cabin"]
    if cabin is not None:
        draw.polygon([pt(*p) for p in cabin], fill=body_colour, outline=dark)
        # Windows: the cabin shrunk inwards, split by a pillar in the body colour.
        cx = sum(p[0] for p in cabin) / len(cabin)
        cy = sum(p[1] for p in cabin) / len(cabin)
        inner = [(cx + (x - cx) * 0.84, cy + (y - cy) * 0.78) for x, y in cabin]
        draw.polygon([pt(*p) for p in inner], fill=glass)
        xs = [p[0] for p in inner]
        if body_type != "Van":
            px = (min(xs) + max(xs)) / 2 + (0.05 if body_type in ("Coupe",) else 0.0)
            top = max(p[1] for p in cabin)
            draw.line([pt(px, cabin[0][1]), pt(px, top)], fill=body_colour, width=max(1, int(scale * 0.025)))
    if body_type == "Convertible":
        # No roof: a windscreen frame, two headrests and the folded top behind them.
        draw.line([pt(0.70, 0.27), pt(0.63, 0.39)], fill=(40, 40, 45), width=max(1, int(scale * 0.012)))
        for x in (0.45, 0.57):
            draw.rounded_rectangle([*pt(x - 0.03, 0.35), *pt(x + 0.03, 0.27)], radius=scale * 0.015, fill=(30, 30, 30))
        draw.rounded_rectangle([*pt(0.14, 0.31), *pt(0.33, 0.265)], radius=scale * 0.02, fill=(25, 25, 28))
    if body_type == "Van":
        # A row of passenger windows along the box.
        for x in (0.06, 0.27, 0.48):
            draw.rectangle([*pt(x, 0.70), *pt(x + 0.17, 0.52)], fill=glass)


def _draw_make_details(draw: ImageDraw.ImageDraw, style: MakeStyle, body_type: str,
                       pt: _ToPixels, scale: float) -> None:
    """The make's details: side stripe, grille at the nose, lights, the big door badge."""
    shape = _SHAPES[body_type]
    cabin = shape["cabin"]
    if style.stripe:
        y_stripe = shape["ride"] + 0.08
        draw.line([pt(0.02, y_stripe), pt(0.97, y_stripe)], fill=style.accent, width=max(1, int(scale * 0.022)))
    g_top = shape["ride"] + (0.17 if body_type not in ("SUV", "Van", "Pickup") else 0.22)
    _draw_grille(draw, style.grille, [*pt(0.915, g_top), *pt(1.0, shape["ride"] + 0.03)], style.accent, (20, 20, 22))
    draw.ellipse([*pt(0.93, g_top + 0.045), *pt(0.99, g_top + 0.005)], fill=(255, 245, 200))
    draw.rectangle([*pt(0.0, g_top + 0.03), *pt(0.025, g_top - 0.02)], fill=(210, 20, 25))
    belt = 0.42 if body_type == "Van" else cabin[0][1] if cabin is not None else 0.27
    bx, by = pt(0.5 if body_type != "Van" else 0.38, (shape["ride"] + belt) / 2 + 0.01)
    badge_r = scale * 0.075 * (1.0 if body_type != "Van" else 1.5)
    _draw_badge(draw, style.badge, bx, by, badge_r, fill=style.accent, outline=(10, 10, 10))


def _draw_wheels(draw: ImageDraw.ImageDraw, axles: tuple[float, ...],
                 pt: _ToPixels, r_wheel: float, accent: tuple[int, int, int]) -> None:
    """A tyre, a rim in the make's accent colour and a hub at each axle."""
    for wx in axles:
        cx, cy = pt(wx, 0)
        cy -= r_wheel
        draw.ellipse([cx - r_wheel, cy - r_wheel, cx + r_wheel, cy + r_wheel], fill=(18, 18, 18))
        rr = r_wheel * 0.55
        draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=accent)
        hub = r_wheel * 0.18
        draw.ellipse([cx - hub, cy - hub, cx + hub, cy + hub], fill=(60, 60, 60))


def _background(rng: np.random.Generator, size: int, horizon: float) -> np.ndarray:
    """A random scene: sky-to-ground gradients, a flat wall, or blocky 'buildings'."""
    kind = rng.integers(0, 3)
    y = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    top, bottom = rng.integers(60, 240, 3), rng.integers(30, 200, 3)
    if kind == 0:
        sky = top + (bottom - top) * y * 0.4
        ground = rng.integers(40, 170, 3) * (0.8 + 0.3 * y)
        img = np.where(y < horizon, sky, ground)
    elif kind == 1:
        img = top + (bottom - top) * y
    else:
        img = np.broadcast_to(top * (1.0 - 0.3 * y), (size, 1, 3)).copy()
        img = np.repeat(img, size, axis=1)
        for _ in range(int(rng.integers(2, 6))):
            x0 = int(rng.integers(0, size))
            w = int(rng.integers(size // 10, size // 3))
            h = int(rng.integers(size // 6, int(size * horizon) + 1))
            img[max(0, int(size * horizon) - h): int(size * horizon), x0: x0 + w] = rng.integers(50, 220, 3)
        img[int(size * horizon):] = rng.integers(40, 160, 3)
    img = np.broadcast_to(img, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def render_image(style: MakeStyle, body_type: str, rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Draw one car of ``style`` and ``body_type`` in a random scene: (S, S, 3) uint8."""
    big = image_size * SUPERSAMPLE
    horizon = float(rng.uniform(0.45, 0.7))
    canvas = Image.fromarray(_background(rng, big, horizon)).convert("RGBA")

    length_px = big * float(rng.uniform(0.68, 0.92))
    x_rear = float(rng.uniform(0.02, 0.98 - 0.9 * length_px / big)) * big
    y_ground = big * float(rng.uniform(0.68, 0.9))
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    _draw_car(layer, style, body_type, rng, x_rear, y_ground, length_px)
    angle = float(rng.uniform(-6.0, 6.0))
    if abs(angle) > 0.5:
        layer = layer.rotate(angle, resample=Image.Resampling.BILINEAR,
                             center=(x_rear + length_px / 2, y_ground - length_px * 0.2))
    canvas.alpha_composite(layer)
    img = canvas.convert("RGB")
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = img.reduce(SUPERSAMPLE)

    return lit_and_noisy(rng, img, image_size)


def lit_and_noisy(rng: np.random.Generator, img: Image.Image, image_size: int) -> np.ndarray:
    """A scene's lighting: overall brightness, a colour cast, a soft gradient across the frame, then
    noise: (S, S, 3) uint8. Empty scenes (datasets/backgrounds.py) are lit the same way."""
    arr = np.asarray(img, dtype=np.float32)
    gain = float(rng.uniform(0.72, 1.22)) * rng.uniform(0.93, 1.07, 3)
    ramp = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    light = 1.0 + float(rng.uniform(-0.15, 0.15)) * (ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None])
    arr = arr * gain * light + float(rng.uniform(-12, 12))
    arr += rng.normal(0.0, float(rng.uniform(2.0, 7.0)), arr.shape).astype(np.float32)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


# -- the data set ---------------------------------------------------------------------------------


def sample_labels(seed: int, index: int) -> tuple[int, str]:
    """(make index, type) of image ``index``: make uniform, then one of the types it builds."""
    rng = np.random.default_rng([seed, index, 0])
    make = int(rng.integers(0, len(MAKES)))
    types = catalogue()[make].types
    return make, types[int(rng.integers(0, len(types)))]


def holdout_combinations(seed: int, k: int) -> tuple[tuple[str, str], ...]:
    """K make/type combinations kept out of train/val/test (they form ``test_unseen``).

    Each comes from a different make that builds other types too, and its type stays built by
    other makes, so both of its classes are still learned from train.
    """
    if k < 0:
        raise DatasetError(f"--holdout-combos must be >= 0. Received: holdout_combos={k}")
    rng = np.random.default_rng([seed, 7_777_777])
    makes_by_type = Counter(t for m in catalogue() for t in m.types)
    candidates = [(m.name, t) for m in catalogue() if len(m.types) >= 2 for t in m.types]
    order = rng.permutation(len(candidates))
    chosen: list[tuple[str, str]] = []
    for i in order:
        make, t = candidates[i]
        if len(chosen) == k:
            break
        if any(c[0] == make for c in chosen) or makes_by_type[t] <= 3:
            continue
        chosen.append((make, t))
        makes_by_type[t] -= 1
    if len(chosen) < k:
        raise DatasetError(f"--holdout-combos {k} is too many: at most {len(chosen)} combinations can be held out")
    return tuple(sorted(chosen))


def _render_chunk(args: tuple[int, int, list[tuple[int, int, str]], str, int]) -> int:
    seed, image_size, items, images_dir, quality = args
    styles = catalogue()
    for index, make, body_type in items:
        rng = np.random.default_rng([seed, index, 1])
        arr = render_image(styles[make], body_type, rng, image_size)
        # Plain writes: labels.csv is written last (atomically), so an interrupted run never
        # leaves a folder that loads as a dataset.
        Image.fromarray(arr).save(os.path.join(images_dir, f"{index:06d}.jpg"), "JPEG", quality=quality)
    return len(items)


def _start_method() -> str:
    """fork where it is safe (fast, and works from scripts without a ``__main__`` guard); spawn
    once TensorFlow is loaded, because a process holding TensorFlow's threads must not be forked."""
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return "fork"
    return "spawn"


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote."""

    out: Path
    num_images: int
    image_size: int
    seed: int
    split_sizes: dict[str, int]
    holdout: tuple[tuple[str, str], ...]
    combinations: int
    wall_s: float
    workers: int

    def format(self) -> str:
        sizes = "  ".join(f"{s}={n}" for s, n in self.split_sizes.items())
        held = ", ".join(f"{m}/{t}" for m, t in self.holdout) or "none"
        return (
            f"wrote {self.num_images} synthetic cars ({self.image_size}x{self.image_size} JPEG) to {self.out} "
            f"in {self.wall_s:.1f} s with {self.workers} workers\n"
            f"  heads: make ({len(MAKES)} classes), type ({len(TYPES)} classes); "
            f"{self.combinations} make/type combinations in the catalogue\n"
            f"  splits: {sizes}\n"
            f"  held out for test_unseen: {held}"
        )


def _splits(seed: int, labels: list[tuple[int, str]], held: set[tuple[str, str]]) -> list[str]:
    """Each image's split: test_unseen for the held-out combinations, the rest shuffled (seeded)
    into train/val/test by SPLIT_FRACTIONS."""
    num_images = len(labels)
    split = ["test_unseen" if (MAKES[m], t) in held else "" for m, t in labels]
    seen = np.array([i for i in range(num_images) if not split[i]])
    order = np.random.default_rng([seed, 8_888_888]).permutation(len(seen))
    n_train = int(round(len(seen) * SPLIT_FRACTIONS[0][1]))
    n_val = int(round(len(seen) * SPLIT_FRACTIONS[1][1]))
    for rank, j in enumerate(order):
        split[int(seen[j])] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return split


def _render_all(out: Path, seed: int, image_size: int, labels: list[tuple[int, str]], workers: int,
                quality: int) -> None:
    """Draw every image into ``out/images``, in chunks over ``workers`` processes (or in this one)."""
    num_images = len(labels)
    images_dir = str(out / "images")
    items = [(i, m, t) for i, (m, t) in enumerate(labels)]
    chunk = max(1, min(200, math.ceil(num_images / (workers * 8))))
    jobs = [(seed, image_size, items[k: k + chunk], images_dir, quality) for k in range(0, num_images, chunk)]
    if workers == 1:
        for job in jobs:
            _render_chunk(job)
        return
    # A process pool that fails loudly (BrokenProcessPool) if a worker dies, never hangs.
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(_start_method())) as pool:
            for _ in pool.map(_render_chunk, jobs):
                pass
    except BrokenProcessPool:
        raise DatasetError(
            "a synth worker process died; when calling generate() from a script that imports TensorFlow, "
            "call it under `if __name__ == '__main__':` or pass workers=1"
        ) from None


def generate(
    out: str | os.PathLike,
    num_images: int = 10_000,
    image_size: int = 128,
    holdout_combos: int = 4,
    seed: int = 0,
    workers: int | None = None,
    quality: int = JPEG_QUALITY,
) -> SynthSummary:
    """Draw the synthetic car set into ``out`` (images/, labels.csv, dataset.json, catalogue.csv)."""
    if num_images < 10:
        raise DatasetError(f"--num-images must be at least 10. Received: num_images={num_images}")
    if not 16 <= image_size <= 1024:
        raise DatasetError(f"--image-size must be between 16 and 1024. Received: image_size={image_size}")
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    out = Path(out)
    holdout = holdout_combinations(seed, holdout_combos)
    start = time.perf_counter()
    labels = [sample_labels(seed, i) for i in range(num_images)]
    split = _splits(seed, labels, set(holdout))

    prepare_output(out, "synthetic", "a synthetic dataset")
    (out / "images").mkdir(exist_ok=True)
    # dataset.json first: a folder left by an interrupted run is still known as synthetic (and
    # replaced by the next run); labels.csv last: only a finished run is a loadable dataset.
    atomic_write_json(out / META_FILE, {
        "format_version": 1,
        "source": "synthetic",
        "generator": "datasets.synth",
        "seed": seed,
        "num_images": num_images,
        "image_size": image_size,
        "jpeg_quality": quality,
        "holdout_combinations": [list(c) for c in holdout],
        "catalogue": {m.name: list(m.types) for m in catalogue()},
    })
    _render_all(out, seed, image_size, labels, workers, quality)
    # Every combination the catalogue builds, the held-out ones too: what a user would know.
    write_catalogue(out / CATALOGUE_FILE, HEADS, combinations())
    rows = [(f"images/{i:06d}.jpg", split[i], (MAKES[m], t)) for i, (m, t) in enumerate(labels)]
    write_labels_csv(out, HEADS, rows)
    wall = time.perf_counter() - start
    counts = Counter(split)
    return SynthSummary(
        out=out, num_images=num_images, image_size=image_size, seed=seed,
        split_sizes={s: counts[s] for s in SPLITS if counts[s]},
        holdout=holdout, combinations=len(combinations()), wall_s=wall, workers=workers,
    )


def contact_sheet(
    root: str | os.PathLike,
    path: str | os.PathLike,
    columns: int = 8,
    rows: int = 6,
    tile: int = 80,
    max_bytes: int | None = None,
) -> Path:
    """A PNG grid of samples from a dataset folder, one make per tile where possible, captioned.

    Picks the first train image of each make (then of other combinations) so the sheet shows as
    many identities as it has tiles. ``max_bytes`` quantises to a 256-colour palette if needed.
    """
    import io

    from PIL import ImageFont

    from datasets.folder import load_dataset
    from edge.io import atomic_write_bytes
    from edge.runtime.preprocess import load_image

    ds = load_dataset(root, allow_outside_paths=True)
    picked, seen_first = [], set()
    for r in ds.records:
        key = r.labels[0]
        if key not in seen_first:
            seen_first.add(key)
            picked.append(r)
    seen_combo = {r.labels for r in picked}
    for r in ds.records:
        if len(picked) >= columns * rows:
            break
        if r.labels not in seen_combo:
            seen_combo.add(r.labels)
            picked.append(r)
    picked = sorted(picked[: columns * rows], key=lambda r: r.labels)
    caption_h = 22
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=10)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    for k, r in enumerate(picked):
        x, y = (k % columns) * tile, (k // columns) * (tile + caption_h)
        sheet.paste(Image.fromarray(load_image(r.path, tile, tile)), (x, y))
        for line, text in enumerate(r.labels[:2]):
            draw.text((x + 2, y + tile + line * 10), text[: tile // 6], fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    sheet.save(buf, "PNG", optimize=True)
    if max_bytes is not None and buf.tell() > max_bytes:
        buf = io.BytesIO()
        sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    return atomic_write_bytes(path, buf.getvalue())
