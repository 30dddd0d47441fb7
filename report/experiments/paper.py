"""``make paper``: the paper's three backbones and one real transfer-learning backbone, one report.

For each of alexnet, googlenet and squeezenet, the whole ``make all`` pipeline runs into
``OUT/<backbone>`` (train multihead/joint/separate, convert, bench, predictions). Their size,
parameters, MACC and latency do not depend on the weights. Their ImageNet weights cannot be had
offline, so by default (``--protocol frozen`` without ``--weights``) their base is a random frozen
one: the structural columns are real, their accuracy is not (the summary leaves it out). With
``--weights`` (``imagenet`` from the keras cache, or a folder holding each backbone's ``.h5``) the
paper's protocol runs for real. ``efficientnet_lite0`` with the ImageNet weights its package ships
(``--transfer-backbone``) runs the paper's protocol for real: its accuracy columns come from
transfer learning with a frozen pretrained base, and the summary labels them so.

``OUT/report.md`` holds every backbone's full tables; ``OUT/summary.md`` one row per backbone
(structure, latency, and accuracy where it comes from pretrained weights), every number read from
the runs' JSON; ``OUT/paper.json`` records each backbone's weights, accuracy source and wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import click

from artifacts.layout import RunLayout
from edge.errors import PolyheadError
from edge.io import atomic_write_json, atomic_write_text
from edge.log import configure_logging
from report.pipeline import PipelineError, PipelineSettings, run_pipeline
from train.defaults import DEFAULTS

PAPER_BACKBONES = ("alexnet", "googlenet", "squeezenet")
TRANSFER_BACKBONE = "efficientnet_lite0"
"""The backbone whose ImageNet weights ship offline: its accuracy columns are real transfer learning."""
PAPER_IMAGE_SIZE = 224
"""The paper's input size (our make all default is chosen by measurement, see docs/training.md)."""


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


def accuracy_source(weights: str, frozen: bool) -> str:
    """What a backbone's accuracy columns mean, for the summary and paper.json."""
    if weights == "none":
        return "none: random frozen base (structure and timing only)" if frozen else "trained from scratch"
    return "ImageNet transfer learning, frozen base" if frozen else "ImageNet weights, fine-tuned"


def run_paper(data: Path, out: Path, weights: str = "none", backbones: Sequence[str] = PAPER_BACKBONES,
              image_size: int = PAPER_IMAGE_SIZE, epochs: int = DEFAULTS.epochs,
              num_images: int = DEFAULTS.num_images, threads: int = DEFAULTS.threads, seed: int = DEFAULTS.seed,
              bench_runs: int = 20, bench_images: int = 50, protocol: str = "frozen",
              transfer_backbone: str | None = TRANSFER_BACKBONE) -> Path:
    """Run the pipeline per backbone into ``out/<backbone>`` and write ``out/report.md`` and ``out/summary.md``."""
    from report.render.build import write_report

    out.mkdir(parents=True, exist_ok=True)
    frozen = freeze_for(protocol, weights)
    record: dict[str, object] = {
        "data": str(data), "weights": weights, "image_size": image_size, "epochs": epochs,
        "num_images": num_images, "threads": threads, "seed": seed,
        "protocol": ("frozen base, heads trained on cached features" if frozen else "from scratch")
        + ("" if weights != "none" or not frozen else " (random frozen base: timing only, accuracy meaningless)"),
        "backbones": {},
    }
    # Every backbone's weights file before the first one trains (a missing one fails in seconds, not hours).
    plan = {b: (weights_for(b, weights, image_size), frozen) for b in backbones}
    if transfer_backbone:
        plan[transfer_backbone] = ("imagenet", True)
    total_start = time.perf_counter()
    for backbone, (chosen, freeze) in plan.items():
        start = time.perf_counter()
        settings = PipelineSettings(
            data=data, run=out / backbone, backbone=backbone, image_size=image_size, epochs=epochs,
            num_images=num_images, threads=threads, seed=seed, weights=chosen,
            bench_runs=bench_runs, bench_images=bench_images,
            protocol="frozen" if freeze else "fine-tune" if chosen != "none" else "scratch",
        )
        run_pipeline(settings)
        # Stage times as the backbone's pipeline.json keeps them (a reused stage keeps its last real time).
        steps = json.loads(RunLayout(out / backbone).pipeline_record.read_text()).get("steps", [])
        record["backbones"][backbone] = {  # type: ignore[index]
            "wall_s": round(time.perf_counter() - start, 1), "weights": chosen,
            "accuracy_source": accuracy_source(chosen, freeze),
            "stages_s": {st["name"]: st.get("wall_s") for st in steps},
        }
        record["total_wall_s"] = round(time.perf_counter() - total_start, 1)
        atomic_write_json(out / "paper.json", record)
    runs = [out / b for b in plan]
    atomic_write_text(out / "summary.md", summary_markdown(runs, record["backbones"]))  # type: ignore[arg-type]
    return write_report(runs, out)


def summary_markdown(runs: Sequence[Path], sources: dict[str, dict[str, str]]) -> str:
    """One row per backbone: multihead structure and latency, and accuracy only where weights are real.

    Every number comes from the run's train.json, convert.json and bench.json.
    """
    from report.render.markdown import (
        NOT_MEASURED,
        fmt_mb_bytes,
        fmt_ms,
        fmt_percent,
        latency_ms,
        load_run,
        tflite_bytes,
    )
    from report.render.markdown import train_figure as tf_

    lines = [
        "| backbone | accuracy source | multihead size float32 | multihead params | multihead MACC | "
        "multihead latency p50 float32 | separate latency p50 float32 | multihead joint acc (test) | "
        "multihead joint acc (unseen) | separate joint acc (unseen) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in runs:
        run = load_run(path)
        source = sources.get(path.name, {}).get("accuracy_source", "")
        real = not source.startswith("none")

        def show(v: float | None, fmt: object, ok: bool = True) -> str:
            if not ok:
                return "— (random weights)"
            return NOT_MEASURED if v is None else fmt(v)  # type: ignore[operator]

        params, macc = tf_(run, "multihead", "params", "total"), tf_(run, "multihead", "macc", "total")
        lines.append(" | ".join([
            f"| {run.backbone}", source,
            show(tflite_bytes(run, "multihead", "float32"), fmt_mb_bytes),
            NOT_MEASURED if params is None else f"{params:,.0f}",
            NOT_MEASURED if macc is None else f"{macc / 1e6:,.1f} M",
            show(latency_ms(run, "multihead", "float32"), fmt_ms),
            show(latency_ms(run, "separate", "float32"), fmt_ms),
            show(tf_(run, "multihead", "metrics", "test", "joint_accuracy"), fmt_percent, real),
            show(tf_(run, "multihead", "metrics", "test_unseen", "joint_accuracy"), fmt_percent, real),
            show(tf_(run, "separate", "metrics", "test_unseen", "joint_accuracy"), fmt_percent, real),
        ]) + " |")
    lines += ["", "Accuracy columns are shown only where the backbone's weights are pretrained (real transfer "
              "learning); a random frozen base gives real size, parameters, MACC and latency only. Sources: "
              "train.json (accuracy, parameters, MACC), convert.json (size), bench.json (latency, interpreter, "
              "p50)."]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path("data/synthetic"),
              show_default=True, help="Dataset folder (Stanford Cars via `python -m datasets stanford-cars`, "
                                      "else the synthetic set, built here if absent).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/paper"),
              show_default=True)
@click.option("--weights", default=DEFAULTS.paper_weights, show_default=True,
              help="none (from scratch), imagenet (keras cache), or a folder with each backbone's .h5.")
@click.option("--backbones", default=",".join(PAPER_BACKBONES), show_default=True)
@click.option("--image-size", type=int, default=PAPER_IMAGE_SIZE, show_default=True, help="The paper's 224 px.")
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--num-images", type=int, default=DEFAULTS.num_images, show_default=True,
              help="When the synthetic set is built.")
@click.option("--threads", type=int, default=DEFAULTS.threads, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--bench-runs", type=int, default=20, show_default=True)
@click.option("--bench-images", type=int, default=50, show_default=True)
@click.option("--protocol", type=click.Choice(["auto", "frozen", "scratch"]), default="frozen", show_default=True,
              help="for the paper's backbones. frozen: the paper's protocol (without --weights a random frozen "
                   "base: structure and timing only); auto: frozen with --weights, else from scratch.")
@click.option("--transfer-backbone", default=TRANSFER_BACKBONE, show_default=True,
              help="backbone run with its packaged ImageNet weights and a frozen base (real transfer learning); "
                   "'' for none.")
def main(data: Path, out: Path, weights: str, backbones: str, image_size: int, epochs: int, num_images: int,
         threads: int, seed: int, bench_runs: int, bench_images: int, protocol: str, transfer_backbone: str) -> None:
    """alexnet, googlenet, squeezenet (structure, latency) and efficientnet_lite0 (real transfer learning)."""
    names = tuple(b.strip() for b in backbones.split(",") if b.strip())
    configure_logging()
    try:
        path = run_paper(data, out, weights, names, image_size, epochs, num_images, threads, seed,
                         bench_runs, bench_images, protocol, transfer_backbone or None)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
