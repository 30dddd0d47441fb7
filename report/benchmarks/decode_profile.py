"""Profile ``edge.runtime.preprocess.load_image`` on photo-like JPEGs: where a file's decode time goes.

``python -m report.benchmarks.decode_profile [--repeats N]`` prints, per source and target (224, 96 px), the
JPEG's size in kB and the p50 of: the whole ``load_image``; the JPEG decode alone at full scale and
at the draft (DCT-scaled) size ``load_image`` uses; and the resize plus array conversion after it.
The repetitions of every case are interleaved, so load on a shared machine falls on all of them
alike. One thread throughout.

The sources are ``photo_jpeg`` images (gradients plus Gaussian noise). "noisy" is quality 90, noise
sigma 12 (the recipe of tests/edge_fixtures.py's 500x375 images; about 760 kB at 1920x1080, more
bytes than most camera frames). "phone" is quality 85, noise sigma 3 (about 260 kB at 1920x1080,
the size of a typical phone camera frame). Entropy decoding scales with the file's bytes, so time
is read against the kB column.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
import numpy as np
from PIL import Image

from edge.runtime.preprocess import load_image, resize_rgb


@dataclass(frozen=True)
class Source:
    """A ``photo_jpeg`` recipe: size, JPEG quality, noise sigma, and the label printed for it."""

    width: int
    height: int
    quality: int = 90
    noise: float = 12.0
    label: str = "noisy"


SOURCES = (Source(500, 375), Source(1920, 1080), Source(1920, 1080, quality=85, noise=3.0, label="phone"),
           Source(4032, 3024))
TARGETS = (224, 96)


def photo_jpeg(width: int, height: int, seed: int = 0, quality: int = 90, noise: float = 12.0) -> bytes:
    """Smooth gradients plus Gaussian noise of sigma ``noise``, saved as a JPEG: decodes like a photo,
    not like flat colour (the defaults are tests/edge_fixtures.py's 500x375 recipe, at any size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = (rng.uniform(0, 255, 3) + 60 * np.sin(xx[..., None] / rng.uniform(10, 60) + rng.uniform(0, 6, 3))
           + 60 * np.cos(yy[..., None] / rng.uniform(10, 60)) + rng.normal(0, noise, (height, width, 3)))
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _decode(data: bytes, draft: tuple[int, int] | None) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    if draft:
        img.draft("RGB", draft)
    img.load()
    return img


def profile(repeats: int = 20, sources: tuple[Source, ...] = SOURCES,
            targets: tuple[int, ...] = TARGETS) -> list[dict[str, object]]:
    """One row per (source, target): p50 ms of each stage, sizes, and the draft size used."""
    rows = []
    for src in sources:
        data = photo_jpeg(src.width, src.height, quality=src.quality, noise=src.noise)
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
            rows.append({"source": f"{src.width}x{src.height} {src.label}",
                         "recipe": f"q{src.quality} noise {src.noise:g}",
                         "jpeg_kb": round(len(data) / 1e3), "target": t,
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
