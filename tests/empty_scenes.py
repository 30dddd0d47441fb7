"""How often a scene without a car passes ``polyhead-edge live --min-score``: the measurement behind
the default threshold (docs/edge.md, "Empty scenes").

A classifier always names a make. This script runs a deployment over three sets and reports, per
threshold, the share of images whose top score passes it on any head (and on each head):
- ``cars``: the synthetic test split (what should pass);
- ``empty``: synthetic scenes drawn exactly as the generator draws them, without the car
  (``datasets.backgrounds.empty_scene``: backgrounds, lighting, noise; other draws than the
  optional background class is trained on);
- ``photos``: photographs of other things bundled with scikit-image and matplotlib (a cat, a
  motorcycle, a horse, a rocket, people, coffee, coins, text ...), whole and in four crops each.

For a still scene the smoothed score converges to the raw one, so the raw per-image score is what
``--min-score`` meets. Host-only (scikit-image is a dev dependency):

    python tests/empty_scenes.py runs/default/edge --data data/synthetic --out build/empty_scenes.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def other_photos() -> dict[str, object]:
    """Bundled photographs of things that are not cars, whole and as four corner crops."""
    import matplotlib
    import skimage
    from PIL import Image

    paths = sorted(p for p in (Path(skimage.__file__).parent / "data").iterdir()
                   if p.suffix in (".png", ".jpg") and "chessboard" not in p.name)
    paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    out = {}
    for p in paths:
        img = Image.open(p).convert("RGB")
        out[p.stem] = img
        w, h = img.size
        for i, (x, y) in enumerate(((0, 0), (w // 3, 0), (0, h // 3), (w // 3, h // 3))):
            out[f"{p.stem}#crop{i}"] = img.crop((x, y, x + 2 * w // 3, y + 2 * h // 3))
    return out


def pass_rates(scores: np.ndarray) -> dict[str, float]:
    """Share of rows whose score is >= each threshold."""
    return {f"{t:g}": round(float((scores >= t).mean()), 4) for t in THRESHOLDS}


def measure(deployment: str, data: str, n_empty: int = 500, n_cars: int = 500, variant: str | None = None,
            nothing: str | None = None) -> dict:
    """Pass rates per set and threshold; with ``nothing`` (a background class), that class never passes."""
    import csv

    import edge
    from datasets.backgrounds import empty_scene

    clf = edge.load(deployment, variant=variant)
    rng = np.random.default_rng(0)
    size = clf._predictor.height
    sets: dict[str, list] = {"empty": [empty_scene(rng, size) for _ in range(n_empty)],
                             "photos": list(other_photos().values())}
    rows = [r for r in csv.DictReader(open(Path(data) / "labels.csv"))
            if r["split"] == "test" and r["make"] != nothing][:n_cars]
    sets["cars"] = [Path(data) / r["image"] for r in rows]
    result: dict = {"variant": clf.variant, "nothing_label": nothing, "thresholds": list(THRESHOLDS), "sets": {}}
    for name, images in sets.items():
        top = {h: [] for h in clf.heads}
        for image in images:
            for h, p in clf.probabilities(image).items():
                best = int(p.argmax())
                top[h].append(0.0 if clf.classes[h][best] == nothing else float(p[best]))
        per_head = {h: np.array(v) for h, v in top.items()}
        any_head = np.max(np.stack(list(per_head.values())), axis=0)
        result["sets"][name] = {"n": len(images), "any_head": pass_rates(any_head),
                                "heads": {h: pass_rates(v) for h, v in per_head.items()},
                                "median_top_score": {h: round(float(np.median(v)), 4) for h, v in per_head.items()}}
    return result


if __name__ == "__main__":
    import click

    @click.command()
    @click.argument("deployment", type=click.Path(exists=True))
    @click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="synthetic dataset")
    @click.option("--variant", default=None)
    @click.option("--nothing-label", default=None, help="the model's background class, if it has one")
    @click.option("--out", default=None, type=click.Path(dir_okay=False))
    def main(deployment: str, data: str, variant: str | None, nothing_label: str | None, out: str | None) -> None:
        """Print (and write) the pass rates of cars, empty scenes and other photos per threshold."""
        r = measure(deployment, data, variant=variant, nothing=nothing_label)
        text = json.dumps(r, indent=1)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text + "\n")
        click.echo(f"{r['variant']}: share of images whose top score passes the threshold on any head")
        click.echo("set       n    " + "  ".join(f"{t:>5g}" for t in THRESHOLDS))
        for name, s in r["sets"].items():
            click.echo(f"{name:8s} {s['n']:4d}  " + "  ".join(f"{v:5.3f}" for v in s["any_head"].values()))

    main()
