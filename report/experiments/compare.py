"""``make compare``: one backbone, three training protocols, all three approaches, from train.json.

The protocols (train/defaults.py ``PROTOCOLS``): ``scratch`` (random init, every layer trains),
``frozen`` (ImageNet base frozen, heads trained on features computed once per image: the paper's)
and ``fine-tune`` (head-only warm-up, then every layer at a lower rate with BatchNorm in inference
mode). Each trains ``python -m train`` into ``OUT/<protocol>`` in its own process, exactly as a
user would; then ``OUT/compare.json`` and ``OUT/compare.md`` hold, per protocol and approach,
per-head test accuracy, joint accuracy on test and on unseen combinations, and training time.
Every number is read back from the runs' train.json.

To stay affordable it trains on a smaller synthetic set than ``make all`` (``--num-images``, built
into ``OUT/data`` by the same generator, same seed and held-out combinations) unless ``--data``
names an existing dataset; the defaults are stated in the report.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from artifacts.layout import RunLayout
from edge.contract.card import APPROACHES
from edge.errors import PolyheadError, first_line
from edge.io import atomic_write_json, atomic_write_text
from edge.log import configure_logging
from report.pipeline import PipelineError, PipelineSettings, data_ready, run_command, synth_command
from train.defaults import DEFAULTS, PROTOCOLS

COMPARE_PROTOCOLS = ("scratch", "frozen", "fine-tune")
COMPARE_NUM_IMAGES = 600
"""Fewer images than make all: fine-tuning and from-scratch runs pass every image every epoch."""
COMPARE_EPOCHS = 3
"""Fewer epochs than make all, the same for every protocol (fine-tune adds its head-only warm-up)."""
COMPARE_IMAGE_SIZE = 96
"""Smaller than make all's 128 px: a whole-network epoch costs about 3x a forward pass per image."""


def train_command(data: Path, run: Path, protocol: str, backbone: str, image_size: int, epochs: int,
                  seed: int, weights: str) -> list[str]:
    """``python -m train`` for one protocol (weights as the protocol forces them: scratch has none)."""
    chosen = PROTOCOLS[protocol].weights or weights
    return [sys.executable, "-m", "train", "--data", str(data), "--out", str(run), "--backbone", backbone,
            "--approach", ",".join(APPROACHES), "--image-size", str(image_size), "--epochs", str(epochs),
            "--seed", str(seed), "--weights", chosen, "--protocol", protocol, "--resume", "--verbose", "0"]


def summarise(train: Mapping[str, Any]) -> dict[str, Any]:
    """Per approach: per-head test accuracy, joint accuracy (test, unseen), training seconds."""
    out: dict[str, Any] = {}
    for approach, v in (train.get("variants") or {}).items():
        metrics = v.get("metrics") or {}
        test, unseen = metrics.get("test") or {}, metrics.get("test_unseen") or {}
        out[approach] = {
            "heads_test_accuracy": {h: m.get("accuracy") for h, m in (test.get("heads") or {}).items()},
            "joint_accuracy_test": test.get("joint_accuracy"),
            "joint_accuracy_unseen": unseen.get("joint_accuracy"),
            "train_wall_s": v.get("train_wall_s"),
            "feature_extract_s": v.get("feature_extract_s"),
        }
    return out


def _pct(v: Any) -> str:
    return "not measured" if v is None else f"{100 * float(v):.1f} %"


def compare_markdown(record: Mapping[str, Any]) -> str:
    """compare.md: one table per quantity, rows = protocols, columns = approaches; all from compare.json."""
    protocols: Mapping[str, Any] = record["protocols"]
    heads: list[str] = []
    for p in protocols.values():
        for a in p["approaches"].values():
            heads += [h for h in a["heads_test_accuracy"] if h not in heads]
    lines = [
        "# Protocol comparison", "",
        f"Backbone `{record['backbone']}`, input {record['image_size']} px, {record['epochs']} epochs, "
        f"seed {record['seed']}, data `{record['data']}` ({record['num_images']} images). Every number is "
        "from the runs' train.json (compare.json). Training time is the approach's models summed (separate: "
        "one per head); with a frozen base it includes the shared feature extraction once, paid by the first "
        "model trained. The budget is smaller than `make all`'s (fewer images and epochs) so that the two "
        "protocols that pass every image through the whole network every epoch stay affordable on a small CPU; "
        "the fine-tune protocol adds its head-only warm-up epochs.", "",
    ]
    for name, p in protocols.items():
        lines.append(f"- `{name}`: {p['description']}; weights {p['weights']}; run `{p['run']}`, "
                     f"{p['wall_s']:.0f} s wall for all three approaches"
                     + (f"; backbone image passes {p['backbone_image_passes']}" if p.get("backbone_image_passes")
                        else ""))
    lines.append("")
    quantities: list[tuple[str, Any]] = [
        *[(f"{h} accuracy (test)", lambda a, h=h: _pct(a["heads_test_accuracy"].get(h))) for h in heads],
        ("joint accuracy (test)", lambda a: _pct(a["joint_accuracy_test"])),
        ("joint accuracy (unseen combinations)", lambda a: _pct(a["joint_accuracy_unseen"])),
        ("training time", lambda a: "not measured" if a["train_wall_s"] is None else f"{a['train_wall_s']:.0f} s"),
    ]
    for title, cell in quantities:
        lines += [f"## {title}", "", "| protocol | " + " | ".join(APPROACHES) + " |",
                  "|---|" + "---|" * len(APPROACHES)]
        for name, p in protocols.items():
            row = [cell(p["approaches"][a]) if a in p["approaches"] else "not measured" for a in APPROACHES]
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append("The joint approach cannot output a combination it never saw, so its unseen joint accuracy is 0 by "
                 "construction.")
    return "\n".join(lines) + "\n"


def run_compare(out: Path, data: Path | None = None, backbone: str = DEFAULTS.backbone,
                image_size: int = COMPARE_IMAGE_SIZE, epochs: int = COMPARE_EPOCHS,
                num_images: int = COMPARE_NUM_IMAGES, seed: int = DEFAULTS.seed, weights: str = "imagenet",
                protocols: Sequence[str] = COMPARE_PROTOCOLS) -> Path:
    """Train every protocol (reusing finished runs), write compare.json and compare.md; returns compare.md."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise PipelineError(f"unknown protocol. Known: {list(PROTOCOLS)}. Received: {unknown}")
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = out / "data"
        if not data_ready(data):
            run_command("data", synth_command(PipelineSettings(data=data, run=out, num_images=num_images, seed=seed)))
    elif not data_ready(data):
        raise PipelineError(f"{data}: no labels.csv (give a dataset folder, or leave --data out to build one)")
    meta_path = data / "dataset.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    record: dict[str, Any] = {"backbone": backbone, "image_size": image_size, "epochs": epochs, "seed": seed,
                              "data": str(data), "num_images": meta.get("num_images", "?"), "protocols": {}}
    for name in protocols:
        run = out / name
        start = time.perf_counter()
        run_command(f"train {name}", train_command(data, run, name, backbone, image_size, epochs, seed, weights))
        train = json.loads(RunLayout(run).train_record.read_text())
        record["protocols"][name] = {
            "description": PROTOCOLS[name].description, "run": str(run), "weights": train.get("weights"),
            "mode": train.get("mode"), "wall_s": round(time.perf_counter() - start, 1),
            "backbone_image_passes": (train.get("feature_extraction") or {}).get("backbone_image_passes"),
            "approaches": summarise(train),
        }
        atomic_write_json(out / "compare.json", record)
    return atomic_write_text(out / "compare.md", compare_markdown(record))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/compare"),
              show_default=True)
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An existing dataset (default: a synthetic set of --num-images built in OUT/data).")
@click.option("--backbone", default=DEFAULTS.backbone, show_default=True)
@click.option("--image-size", type=int, default=COMPARE_IMAGE_SIZE, show_default=True)
@click.option("--epochs", type=int, default=COMPARE_EPOCHS, show_default=True)
@click.option("--num-images", type=int, default=COMPARE_NUM_IMAGES, show_default=True)
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--weights", default="imagenet", show_default=True, help="For frozen and fine-tune (scratch: none).")
@click.option("--protocols", default=",".join(COMPARE_PROTOCOLS), show_default=True)
def main(out: Path, data: Path | None, backbone: str, image_size: int, epochs: int, num_images: int, seed: int,
         weights: str, protocols: str) -> None:
    """Train scratch, frozen and fine-tuned runs; compare every approach in compare.md."""
    names = tuple(p.strip() for p in protocols.split(",") if p.strip())
    configure_logging()
    try:
        path = run_compare(out, data, backbone, image_size, epochs, num_images, seed, weights, names)
    except (PolyheadError, OSError, json.JSONDecodeError) as e:
        raise click.ClickException(first_line(e, None)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
