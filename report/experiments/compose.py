"""``make compose``: plain heads against composed heads (every ``--compose`` mode), over several seeds.

Each (compose mode, seed) is a training run (``train.fit.run_training``, what ``python -m train``
calls) into ``OUT/<mode>-seed<N>``, multihead by default (composition does not apply to the joint
model; separate models on a frozen base equal the multihead heads). The runs share one process and
one feature cache: each image is decoded and passed through the frozen base once for all of them. ``OUT/compose.json`` and ``OUT/compose.md`` then hold, side by side, per head and joint:
test (seen pairs), test_unseen (pairs never in train) and the pair-held-out fold validation
(train/pairfold.py: unseen and seen pairs of the val split), as the mean over seeds and the spread
(min..max); and the cost: parameters, head-training seconds and the fold validation's seconds.
Every number is read back from the runs' train.json. Choices are made on the fold validation;
test_unseen is reported, never tuned on.

The dataset is ``--data`` (built with the synthetic generator when absent, like ``make all``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from artifacts.layout import RunLayout
from edge.contract.catalogue import CATALOGUE_FILE
from edge.errors import PolyheadError, first_line
from edge.io import atomic_write_json, atomic_write_text
from edge.log import configure_logging
from report.pipeline import PipelineError, PipelineSettings, data_ready, run_command, synth_command
from train.defaults import DEFAULTS

COMPOSE_APPROACHES = ("multihead",)
"""Separate models on a frozen base are the multihead model's heads exactly (docs/training.md), so
by default only multihead trains; ``--approaches multihead,separate`` shows both."""
MODES = ("none", "additive", "projected", "projected-residual", "auto")
SEEDS = (0, 1, 2)


def _split(m: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not m:
        return None
    return {"heads": {h: v["accuracy"] for h, v in m["heads"].items()}, "joint": m["joint_accuracy"],
            "joint_catalogue": m.get("joint_accuracy_catalogue"), "n": m["n_all_labelled"]}


def summarise(train: Mapping[str, Any]) -> dict[str, Any]:
    """Per approach: accuracies (test, test_unseen, fold unseen and seen), params, training seconds."""
    out: dict[str, Any] = {}
    for approach, v in (train.get("variants") or {}).items():
        metrics = v.get("metrics") or {}
        folds = v.get("pair_folds") or {}
        out[approach] = {
            "test": _split(metrics.get("test")),
            "test_unseen": _split(metrics.get("test_unseen")),
            "fold_unseen": _split(folds.get("unseen")),
            "fold_seen": _split(folds.get("seen")),
            "params": v["params"]["total"],
            "trained_params": v["params"]["trainable"],
            "train_wall_s": v.get("train_wall_s"),
            "feature_extract_s": v.get("feature_extract_s"),
            # The runs share one feature cache: the first pays the extraction, so compare without it.
            "head_train_s": round(float(v.get("train_wall_s") or 0.0) - float(v.get("feature_extract_s") or 0.0), 3),
            "folds_wall_s": folds.get("wall_s"),
            "auto_wall_s": ((train.get("compose") or {}).get("auto") or {}).get("wall_s"),
        }
    return out


CATALOGUE = ("catalogue",)
"""``_values``' head for the joint accuracy decoded among the dataset's catalogue."""


def _values(runs: Sequence[Mapping[str, Any]], approach: str, split: str, head: str | tuple[str] | None) -> list[float]:
    """Per run: a head's accuracy, the joint (``head`` None) or the catalogue-decoded joint (``CATALOGUE``)."""
    vals = []
    for r in runs:
        s = (r["approaches"].get(approach) or {}).get(split)
        if s is None:
            continue
        v = s["joint"] if head is None else s.get("joint_catalogue") if head == CATALOGUE else s["heads"][head]
        if v is not None:
            vals.append(float(v))
    return vals


def _cell(vals: Sequence[float], scale: float = 100.0, unit: str = "") -> str:
    """mean (min..max) over seeds."""
    if not vals:
        return "not measured"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{scale * mean:.1f}{unit}"
    return f"{scale * mean:.1f} ({scale * min(vals):.1f}..{scale * max(vals):.1f}){unit}"


def _delta(a: Sequence[float], b: Sequence[float]) -> str:
    if not a or not b:
        return ""
    d = 100 * (sum(b) / len(b) - sum(a) / len(a))
    return f"{d:+.1f}"


SPLIT_TITLES = {
    "test": "test (seen pairs)",
    "test_unseen": "test_unseen (pairs never in train)",
    "fold_unseen": "fold validation, held-out pairs",
    "fold_seen": "fold validation, seen pairs",
}


def _cost_lines(approach: str, plain: Mapping[str, Any], composed: Mapping[str, Any]) -> list[str]:
    """compose.md's cost table of one approach: parameters, head training, folds, auto's choice."""
    lines = ["| cost | plain | " + " | ".join(composed) + " |", "|---|---|" + "---|" * len(composed)]
    for title, key, unit in (("parameters (deployed)", "params", ""),
                             ("head training (s, without feature extraction)", "head_train_s", " s"),
                             ("fold validation (s, 3 folds)", "folds_wall_s", " s"),
                             ("auto's choice (s, 4 modes x 3 folds, before training)", "auto_wall_s", " s")):
        cells = []
        for mode in (plain, *composed.values()):
            vals = [float(r["approaches"][approach][key]) for r in mode["runs"]
                    if approach in r["approaches"] and r["approaches"][approach].get(key) is not None]
            if key == "params":
                cells.append(f"{int(vals[0]):,}" if vals else "not measured")
            elif key == "auto_wall_s" and not vals:
                cells.append("-")  # only auto chooses
            else:
                cells.append(_cell(vals, 1.0, unit))
        lines.append(f"| {title} | {' | '.join(cells)} |")
    return lines


def compose_markdown(record: Mapping[str, Any]) -> str:
    """compose.md: per approach, one row per split and head (and joint), plain against each composed mode."""
    modes: Mapping[str, Any] = record["modes"]
    heads: list[str] = record["heads"]
    plain = modes.get("none", {"runs": []})
    composed = {m: v for m, v in modes.items() if m != "none"} or {"additive": {"runs": []}}
    lines = [
        f"# Composed heads: plain against {', '.join(composed)}", "",
        f"Backbone `{record['backbone']}` (ImageNet, frozen), input {record['image_size']} px, {record['epochs']} "
        f"head epochs, data `{record['data']}`, seeds {', '.join(str(s) for s in record['seeds'])}. Cells are "
        "accuracy in %, mean over seeds (min..max); the last column is composed minus plain, in points. Every "
        "number is read from the runs' train.json (compose.json). The fold validation (train/pairfold.py) trains "
        "the heads again with whole pairs held out of train and scores the val images of those pairs (held-out) "
        "and of the others (seen); each seed draws its own folds, the same for every mode. Copies: "
        f"{record.get('settings', '')}. **joint, catalogue**: where the dataset has a catalogue.csv "
        "(edge/contract/catalogue.py), the joint answer decoded among the combinations it lists (the held-out "
        "pairs among them) instead of each head's own top class: the same model, the same rows.", "",
    ]
    for approach in record["approaches"]:
        lines += [f"## {approach}", "", "| split | accuracy | plain (`--compose none`) | "
                  + " | ".join(f"`--compose {m}` | change" for m in composed) + " |",
                  "|---|---|---|" + "---|---|" * len(composed)]
        for split, title in SPLIT_TITLES.items():
            for head in [*heads, None, CATALOGUE]:
                a = _values(plain["runs"], approach, split, head)
                bs = [_values(mode["runs"], approach, split, head) for mode in composed.values()]
                if head == CATALOGUE and not a and not any(bs):
                    continue  # no catalogue.csv in the dataset
                cells = [c for b in bs for c in (_cell(b), _delta(a, b))]
                label = "**joint**" if head is None else "**joint, catalogue**" if head == CATALOGUE else head
                lines.append(f"| {title} | {label} | {_cell(a)} | {' | '.join(cells)} |")
        lines += ["", *_cost_lines(approach, plain, composed)]
        lines.append("")
    chosen = [f"seed {r['seed']}: {r['auto']['chosen']}" for r in modes.get("auto", {}).get("runs", []) if r.get("auto")]
    if chosen:
        decode = next(r["auto"]["decode"] for r in modes["auto"]["runs"] if r.get("auto"))
        lines += [f"`--compose auto` chose, on each run's own pair-held-out folds ({decode} decode; "
                  "train/autocompose.py): " + ", ".join(chosen) + ".", ""]
    lines += [
        "Latency: composition changes only the training (the batches; projected also which directions each "
        "head's kernel may use, inside the same Dense); the deployed model is the same graph (one Dense "
        "softmax per head on the same backbone, the same parameter count above), so its latency on the device "
        "is the plain model's (`make bench`). The machine's load average during the runs is in compose.json "
        "(`load_average`).", "",
    ]
    return "\n".join(lines)


def _finished(run: Path, mode: str, seed: int, has_catalogue: bool) -> dict[str, Any] | None:
    """The run's train.json when it was made with this compose mode and seed and the same catalogue
    presence (reused), else None."""
    path = RunLayout(run).train_record
    if not path.is_file():
        return None
    train = json.loads(path.read_text())
    compose = train.get("compose") or {}
    if ("auto" if "auto" in compose else compose.get("mode")) != mode or train.get("seed") != seed:
        return None
    if ("catalogue" in train) != has_catalogue:
        return None  # made before the dataset's catalogue.csv was written, or after it was removed
    return train


def run_compose(out: Path, data: Path, seeds: Sequence[int] = SEEDS, backbone: str = DEFAULTS.backbone,
                image_size: int = DEFAULTS.image_size, epochs: int = DEFAULTS.epochs,
                num_images: int = DEFAULTS.num_images, holdout_combos: int = DEFAULTS.holdout_combos,
                approaches: Sequence[str] = COMPOSE_APPROACHES, modes: Sequence[str] = MODES) -> Path:
    """Train every (mode, seed) (reusing finished runs), write compose.json and compose.md; returns compose.md.

    One process, one decode and one backbone pass per image for every run: the runs share the
    frozen base's feature cache (the features do not depend on the seed or the mode)."""
    from train.data import open_arrays
    from train.fit import FeatureCache, TrainConfig, run_training

    out.mkdir(parents=True, exist_ok=True)
    if not data_ready(data):
        run_command("data", synth_command(PipelineSettings(data=data, run=out, num_images=num_images,
                                                           holdout_combos=holdout_combos)))
    def config(mode: str, seed: int) -> TrainConfig:
        return TrainConfig(data=str(data), out=str(out / f"{mode}-seed{seed}"), backbone=backbone,
                           approaches=tuple(approaches), image_size=(image_size, image_size), epochs=epochs,
                           seed=seed, weights="imagenet", freeze_base=True, compose=mode, pair_folds=3, verbose=0)

    sample = config("additive", 0)
    record: dict[str, Any] = {
        "backbone": backbone, "image_size": image_size, "epochs": epochs, "data": str(data), "seeds": list(seeds),
        "approaches": list(approaches), "heads": [], "modes": {},
        "settings": f"{sample.compose_copies} swapped copies per row, total weight {sample.compose_weight:g}",
        "default_compose": DEFAULTS.compose,
    }
    loaded: dict[str, Any] = {}
    cache = None
    for mode in modes:
        record["modes"][mode] = {"runs": []}
        for seed in seeds:
            cfg = config(mode, seed)
            start = time.perf_counter()
            train = _finished(Path(cfg.out), mode, seed, (data / CATALOGUE_FILE).is_file())
            if train is None:
                if not loaded:
                    schema, arrays, _ = open_arrays(data, (image_size, image_size))
                    loaded = {"schema": schema, "arrays": arrays}
                    cache = FeatureCache(cfg.batch_size, Path(cfg.out))  # later runs read this run's store
                click.echo(f"[compose] {mode} seed {seed} -> {cfg.out}", err=True)
                train = run_training(cfg, data=loaded["arrays"], schema=loaded["schema"], cache=cache)
            summary = summarise(train)
            record.setdefault("load_average", []).append([round(x, 2) for x in os.getloadavg()])
            for a in summary.values():
                record["heads"] += [h for h in (a["test"] or {}).get("heads", {}) if h not in record["heads"]]
            record["modes"][mode]["runs"].append({"seed": seed, "run": cfg.out, "approaches": summary,
                                                  "wall_s": round(time.perf_counter() - start, 1),
                                                  "pair_folds": train.get("pair_folds"),
                                                  "auto": (train.get("compose") or {}).get("auto")})
            atomic_write_json(out / "compose.json", record)
    return atomic_write_text(out / "compose.md", compose_markdown(record))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path(DEFAULTS.data), show_default=True,
              help="Dataset folder (the synthetic set is built there when absent).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/compose"),
              show_default=True)
@click.option("--seeds", default=",".join(str(s) for s in SEEDS), show_default=True)
@click.option("--backbone", default=DEFAULTS.backbone, show_default=True)
@click.option("--image-size", type=int, default=DEFAULTS.image_size, show_default=True)
@click.option("--epochs", type=int, default=DEFAULTS.epochs, show_default=True)
@click.option("--num-images", type=int, default=DEFAULTS.num_images, show_default=True)
@click.option("--holdout-combos", type=int, default=DEFAULTS.holdout_combos, show_default=True)
@click.option("--approaches", default=",".join(COMPOSE_APPROACHES), show_default=True)
@click.option("--modes", type=str, default=",".join(MODES), show_default=True, help="compose modes; none is the plain baseline")
def main(data: Path, out: Path, seeds: str, backbone: str, image_size: int, epochs: int, num_images: int,
         holdout_combos: int, approaches: str, modes: str) -> None:
    """Train plain and composed heads over several seeds; compare them in compose.md."""
    configure_logging()
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
        names = tuple(a.strip() for a in approaches.split(",") if a.strip())
        mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
        path = run_compose(out, data, seed_list, backbone, image_size, epochs, num_images, holdout_combos, names, mode_list)
    except ValueError as e:
        raise click.ClickException(f"--seeds must be a comma list of integers. Received: {seeds!r} ({e})") from None
    except (PolyheadError, PipelineError, OSError, json.JSONDecodeError) as e:
        raise click.ClickException(first_line(e, None)) from None
    click.echo(str(path))


if __name__ == "__main__":
    main()
