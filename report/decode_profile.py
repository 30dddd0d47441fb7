"""Profile ``edge.preprocess.load_image`` on photo-like JPEGs: where a file's decode time goes.

``python -m report.decode_profile [--repeats N]`` prints, per source size (500x375, 1920x1080,
4032x3024) and target (224, 96 px), the p50 of: the whole ``load_image``; the JPEG decode alone at
full scale and at the draft (DCT-scaled) size ``load_image`` uses; and the resize plus array
conversion after it. The repetitions of every case are interleaved, so load on a shared machine
falls on all of them alike. One thread throughout.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import click
import numpy as np
from PIL import Image

from edge.preprocess import load_image, resize_rgb

SOURCES = ((500, 375), (1920, 1080), (4032, 3024))
TARGETS = (224, 96)


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 90) -> bytes:
    """Smooth gradients plus mild noise, saved as a JPEG: decodes like a photo, not like flat colour
    (the recipe of tests/edge_fixtures.py's 500x375 images, at any size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = (rng.uniform(0, 255, 3) + 60 * np.sin(xx[..., None] / rng.uniform(10, 60) + rng.uniform(0, 6, 3))
           + 60 * np.cos(yy[..., None] / rng.uniform(10, 60)) + rng.normal(0, 12, (height, width, 3)))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _decode(data: bytes, draft: tuple[int, int] | None) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if draft:
        img.draft("RGB", draft)
    img.load()
    return img


def profile(repeats: int = 20, sources: tuple[tuple[int, int], ...] = SOURCES,
            targets: tuple[int, ...] = TARGETS) -> list[dict[str, object]]:
    """One row per (source, target): p50 ms of each stage, sizes, and the draft size used."""
    rows = []
    for w, h in sources:
        data = photo_jpeg(w, h)
        for t in targets:
            drafted = _decode(data, (t, t))
            cases: dict[str, Callable[[], object]] = {
                "load_image": lambda d=data, t=t: load_image(d, t, t),
                "decode_full": lambda d=data: _decode(d, None),
                "decode_draft": lambda d=data, t=t: _decode(d, (t, t)),
                "resize_and_array": lambda img=drafted, t=t: resize_rgb(img, t, t),
            }
            samples: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(repeats):
                for name, fn in cases.items():
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - t0) * 1e3)
            rows.append({"source": f"{w}x{h}", "jpeg_kb": round(len(data) / 1e3), "target": t,
                         "draft_size": "x".join(map(str, drafted.size)),
                         **{f"{k}_ms": round(float(np.median(v)), 3) for k, v in samples.items()}})
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True)
def main(repeats: int) -> None:
    """Print the decode profile as a Markdown table."""
    rows = profile(repeats)
    keys = list(rows[0])
    click.echo("| " + " | ".join(keys) + " |")
    click.echo("|" + "---|" * len(keys))
    for row in rows:
        click.echo("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
