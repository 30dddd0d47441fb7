"""``make paper``: the paper's three backbones with the paper's protocol, one report with three tables.

For each of alexnet, googlenet and squeezenet, the whole ``make all`` pipeline runs into
``OUT/<backbone>`` (train multihead/joint/separate, convert, bench, predictions). The protocol of
arXiv:1911.02098 is transfer learning with the base frozen: with ``--weights`` given (``imagenet``
from the keras cache, or a folder holding each backbone's ``.h5``) the base is frozen and only the
heads train (``--freeze-base``); with ``--weights none`` there is nothing to freeze, so the
networks train from scratch, and the report says so (config.json records the weights). Then one
report (OUT/report.md) holds the three tables. ``OUT/paper.json`` records each backbone's wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import click

from edge.io import atomic_write_json
from report.pipeline import PipelineError, PipelineSettings, run_pipeline

PAPER_BACKBONES = ("alexnet", "googlenet", "squeezenet")


def weights_for(backbone: str, weights: str, image_size: int) -> str:
    """``none``/``imagenet`` as given; a folder becomes the backbone's file in it (its registry name)."""
    path = Path(weights)
    if weights in ("none", "imagenet") or not path.is_dir():
        return weights
    from train.backbones import BackboneError, backbone_spec

    try:
        spec = backbone_spec(backbone)
    except BackboneError as e:
        raise PipelineError(str(e)) from None
    name = spec.imagenet_file((image_size, image_size), {}) if spec.imagenet_file else None
    if not name or not (path / name).is_file():
        raise PipelineError(f"{path}: no weights file for {backbone} (expected {name or 'none registered'})")
    return str(path / name)


def freeze_for(protocol: str, weights: str) -> bool:
    """auto: frozen base when weights are given (the paper), from scratch otherwise."""
    if protocol not in ("auto", "frozen", "scratch"):
        raise PipelineError(f"unknown protocol. Known: auto, frozen, scratch. Received: protocol={protocol}")
    return protocol == "frozen" or (protocol == "auto" and weights != "none")


def run_paper(data: Path, out: Path, weights: str = "none", backbones: Sequence[str] = PAPER_BACKBONES,
              image_size: int = 224, epochs: int = 8, num_images: int = 6000, threads: int = 1, seed: int = 0,
              bench_runs: int = 20, bench_images: int = 50, protocol: str = "auto") -> Path:
    """Run the pipeline per backbone into ``out/<backbone>`` and write ``out/report.md``."""
    from report.build import write_report

    out.mkdir(parents=True, exist_ok=True)
    frozen = freeze_for(protocol, weights)
    record: dict[str, object] = {
        "data": str(data), "weights": weights, "image_size": image_size, "epochs": epochs,
        "protocol": ("frozen base, heads trained on cached features" if frozen else "from scratch")
        + ("" if weights != "none" or not frozen else " (random frozen base: timing only, accuracy meaningless)"),
        "backbones": {},
    }
    # Every backbone's weights file before the first one trains (a missing one fails in seconds, not hours).
    chosen_weights = {backbone: weights_for(backbone, weights, image_size) for backbone in backbones}
    total_start = time.perf_counter()
    for backbone in backbones:
        start = time.perf_counter()
        chosen = chosen_weights[backbone]
        settings = PipelineSettings(
            data=data, run=out / backbone, backbone=backbone, image_size=image_size, epochs=epochs,
            num_images=num_images, threads=threads, seed=seed, weights=chosen,
            bench_runs=bench_runs, bench_images=bench_images,
            extra_train_args=("--freeze-base",) if frozen else (),
        )
        run_pipeline(settings)
        # Stage times as the backbone's pipeline.json keeps them (a reused stage keeps its last real time).
        steps = json.loads((out / backbone / "pipeline.json").read_text()).get("steps", [])
        record["backbones"][backbone] = {  # type: ignore[index]
            "wall_s": round(time.perf_counter() - start, 1), "weights": chosen,
            "stages_s": {st["name"]: st.get("wall_s") for st in steps},
        }
        record["total_wall_s"] = round(time.perf_counter() - total_start, 1)
        atomic_write_json(out / "paper.json", record)
    return write_report([out / b for b in backbones], out)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path("data/synthetic"),
              show_default=True, help="Dataset folder (Stanford Cars via `python -m datasets stanford-cars`, "
                                      "else the synthetic set, built here if absent).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/paper"),
              show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="none (from scratch), imagenet (keras cache), or a folder with each backbone's .h5.")
@click.option("--backbones", default=",".join(PAPER_BACKBONES), show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True, help="The paper's 224 px.")
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--num-images", type=int, default=6000, show_default=True, help="When the synthetic set is built.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bench-runs", type=int, default=20, show_default=True)
@click.option("--bench-images", type=int, default=50, show_default=True)
@click.option("--protocol", type=click.Choice(["auto", "frozen", "scratch"]), default="auto", show_default=True,
              help="auto: frozen base when --weights is given (the paper), else from scratch; "
                   "frozen without weights times the paper's protocol on a random base.")
def main(data: Path, out: Path, weights: str, backbones: str, image_size: int, epochs: int, num_images: int,
         threads: int, seed: int, bench_runs: int, bench_images: int, protocol: str) -> None:
    """Train, convert and benchmark alexnet, googlenet and squeezenet; one report with three tables."""
    names = tuple(b.strip() for b in backbones.split(",") if b.strip())
    try:
        path = run_paper(data, out, weights, names, image_size, epochs, num_images, threads, seed,
                         bench_runs, bench_images, protocol)
    except PipelineError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
