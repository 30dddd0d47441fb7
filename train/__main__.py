"""``python -m train``: train the three approaches; ``python -m train profile``: params/MACC/size.

The CLI parses and calls: logic lives in train.fit / train.models / train.macc. TensorFlow is
imported lazily so ``--help`` is fast. Known errors are one line (click.ClickException).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from artifacts.layout import RunLayout
from edge.errors import PolyheadError, first_line
from edge.log import configure_logging
from train.defaults import COMPOSE_MODES as _COMPOSE_MODES
from train.defaults import DEFAULTS as _D
from train.defaults import PROTOCOLS as _P

_PROTOCOL = _P[_D.protocol]
DEFAULTS = {
    "backbone": _D.backbone,
    "approaches": ",".join(_D.approaches),
    "image_size": _D.image_size,
    "batch_size": _D.batch_size,
    "epochs": _D.epochs,
    "learning_rate": _D.learning_rate,
    "seed": _D.seed,
    "weights": _PROTOCOL.weights or _D.weights,
    "freeze_base": _PROTOCOL.freeze_base,
    "warmup_epochs": _PROTOCOL.warmup_epochs,
    "fine_tune_learning_rate": _PROTOCOL.fine_tune_learning_rate,
}
"""Settings before --config, config.json and flags: train/defaults.py's, with its default protocol."""


def _parse_head_weights(text: str | None) -> dict[str, float] | None:
    if text is None:
        return None
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"expected head=weight[,head=weight]. Received: {part!r}") from None
    return out


def _parse_size(text: Any) -> list[int] | None:
    if text is None:
        return None
    parts = str(text).lower().replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise click.BadParameter(f"expected N or HxW. Received: {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2:
        raise click.BadParameter(f"expected N or HxW. Received: {text!r}")
    return vals


def _fail(e: PolyheadError | OSError) -> click.ClickException:
    """A known error as click's one-line ``Error: ...`` (the message's first line, else its type)."""
    return click.ClickException(first_line(e, None))


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(file_okay=False), help="dataset folder (labels.csv + images)")
@click.option("--out", type=click.Path(file_okay=False), help="run folder, e.g. runs/NAME")
@click.option("--backbone", help=f"registered backbone (default {DEFAULTS['backbone']}; see `python -m train backbones`)")
@click.option("--approach", "approaches", help="comma list of multihead,joint,separate (default all)")
@click.option("--image-size", help=f"N or HxW (default {DEFAULTS['image_size']})")
@click.option("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
@click.option("--epochs", type=int, help=f"default {DEFAULTS['epochs']}")
@click.option("--learning-rate", type=float, help=f"Adam learning rate (default {DEFAULTS['learning_rate']})")
@click.option("--seed", type=int, help=f"default {DEFAULTS['seed']}")
@click.option("--weights", help="none | imagenet (installed package or keras cache ~/.keras/models, never "
                                f"downloaded) | PATH.h5 | PATH.pth (EfficientNet-Lite) (default {DEFAULTS['weights']})")
@click.option("--protocol", type=click.Choice(list(_P)),
              help=f"frozen | fine-tune | scratch: sets weights (scratch), --freeze-base, --warmup-epochs and "
                   f"--fine-tune-learning-rate as train/defaults.py says; flags given win (default {_D.protocol})")
@click.option("--freeze-base/--fine-tune", "freeze_base", default=None,
              help="train the heads only on cached backbone features (paper) / train every layer "
                   f"(default {'--freeze-base' if DEFAULTS['freeze_base'] else '--fine-tune'})")
@click.option("--warmup-epochs", type=int, help="with --fine-tune: head-only epochs first (default 0)")
@click.option("--fine-tune-learning-rate", type=float,
              help="with --fine-tune: learning rate once every layer trains (default: --learning-rate)")
@click.option("--freeze-bn/--train-bn", "freeze_bn", default=None,
              help="with --fine-tune: BatchNorm in inference mode (default: on with pretrained weights)")
@click.option("--augment/--no-augment", default=None, help="flip+brightness (default: on when fine-tuning pretrained weights)")
@click.option("--feature-cache/--no-feature-cache", default=None,
              help="with --freeze-base: cache backbone features (default on)")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multiworker"]), help="tf.distribute strategy")
@click.option("--head-weights", help="per-head loss weights, e.g. make=1,type=0.5")
@click.option("--label-smoothing", type=float, help="default 0")
@click.option("--alpha", type=float, help="width multiplier (mobilenet_v2 / mobilenet_v3_small)")
@click.option("--compose", type=click.Choice(_COMPOSE_MODES),
              help=f"heads on a frozen base: none, additive feature augmentation so they name label pairs "
                   f"never seen together, projected (the same, and each head kept off the other heads' "
                   f"components), projected-residual (and off the pair-specific directions), or auto (the one "
                   f"the run's pair-held-out folds prefer); multihead and separate, not joint (default {_D.compose})")
@click.option("--compose-copies", type=int, help="additive/projected: swapped copies per train row (default 2)")
@click.option("--compose-weight", type=float, help="additive/projected: their total loss weight (default 3)")
@click.option("--pair-folds", type=int,
              help=f"pair-held-out validation folds of a frozen-base run, in train.json (default {_D.pair_folds}; 0: none)")
@click.option("--allow-outside-paths/--no-allow-outside-paths", "allow_outside_paths", default=None,
              help="accept labels.csv image paths that are absolute or leave the dataset folder (default: refuse)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON settings; flags override its keys")
@click.option("--resume", is_flag=True, help="continue a run folder from its last finished epoch")
@click.option("--verbose", type=click.IntRange(0, 2), help="Keras verbosity (default: bars on a terminal, else 2)")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, resume: bool, alpha: float | None, protocol: str | None,
         **flags: Any) -> None:
    """Train multi-head, joint and separate models on one dataset under one budget.

    \b
    python -m train --data data/synthetic --backbone mobilenet_v2 --out runs/mnv2
    python -m train --data data/cars --backbone squeezenet --weights imagenet --freeze-base --out runs/sq
    python -m train --out runs/mnv2 --resume        # continue, settings from runs/mnv2/config.json
    """
    configure_logging()
    if ctx.invoked_subcommand is not None:
        return
    try:
        cfg = resolve_config(config_file, resume, alpha, flags, protocol)
        from train.fit import TrainingInterrupted, run_training, summary_table

        try:
            record = run_training(cfg)
        except TrainingInterrupted as e:
            click.echo(str(e), err=True)
            sys.exit(130)
    except (PolyheadError, OSError) as e:
        raise _fail(e) from None
    if record:
        click.echo(summary_table(record))
        if any("test_unseen" in v["metrics"] for v in record["variants"].values()):
            click.echo(summary_table(record, "test_unseen"))
        click.echo(f"wrote {RunLayout(Path(cfg.out)).train_record}")


def resolve_config(config_file: str | None, resume: bool, alpha: float | None, flags: dict[str, Any],
                   protocol: str | None = None) -> Any:
    """defaults < --config FILE < the run's config.json (with --resume) < --protocol < flags given."""
    from train.fit import TrainConfig, TrainError

    def read(path: str | Path) -> dict[str, Any]:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TrainError(f"{path}: cannot read config: {e}") from None

    settings: dict[str, Any] = dict(DEFAULTS)
    if config_file:
        settings.update(read(config_file))
    out = flags.get("out") or settings.get("out")
    if resume:
        if not out:
            raise TrainError("--resume needs --out (the run folder)")
        prev = RunLayout(Path(out)).config
        if prev.is_file():
            settings.update(read(prev))
    if protocol is not None:
        settings.update(_P[protocol].settings())
    given = {k: v for k, v in flags.items() if v is not None}
    if "image_size" in given:
        given["image_size"] = _parse_size(given["image_size"])
    elif "image_size" in settings:
        settings["image_size"] = _parse_size(settings["image_size"]) if not isinstance(settings["image_size"], list) else settings["image_size"]
    if "head_weights" in given:
        given["head_weights"] = _parse_head_weights(given["head_weights"])
    settings.update(given)
    if alpha is not None:
        settings["backbone_kwargs"] = {**settings.get("backbone_kwargs", {}), "alpha": alpha}
    for key in ("data", "out"):
        if not settings.get(key):
            raise TrainError(f"--{key} is required")
    return TrainConfig.from_dict(settings)


@main.command("profile")
@click.option("--backbone", required=True)
@click.option("--data", type=click.Path(file_okay=False), required=True, help="dataset folder (for its heads)")
@click.option("--image-size", help="N or HxW (default: the backbone's)")
@click.option("--approach", "approaches", default="multihead,joint,separate")
@click.option("--freeze-base/--fine-tune", "freeze_base", default=True,
              help="trained MACC counts heads only (paper, default) / every layer")
@click.option("--alpha", type=float)
@click.option("--json", "as_json", is_flag=True, help="one JSON record per approach instead of a table")
@click.option("--allow-outside-paths", is_flag=True,
              help="accept labels.csv image paths that are absolute or leave the dataset folder")
def profile_cmd(backbone: str, data: str, image_size: str | None, approaches: str, freeze_base: bool,
                alpha: float | None, as_json: bool, allow_outside_paths: bool) -> None:
    """Parameters, MACC (whole model and trained layers) and .keras size per approach."""
    try:
        from datasets.folder import load_dataset
        from train.profile import profile

        schema = load_dataset(data, allow_outside_paths=allow_outside_paths).schema
        size = _parse_size(image_size)
        rows = profile(backbone, schema, size, approaches.split(","), freeze_base,
                       {"alpha": alpha} if alpha is not None else {})
    except (PolyheadError, OSError) as e:
        raise _fail(e) from None
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    from train.profile import format_profile

    click.echo(format_profile(rows))


@main.command("add-head")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="dataset folder with a column per head, old and new (empty cells allowed)")
@click.option("--head", "heads", multiple=True, required=True, help="head (labels.csv column) to add; repeatable")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="new run folder (RUN is kept)")
@click.option("--retrain-joint", is_flag=True,
              help="retrain the joint model's output layer over the grown combinations (else joint is left out)")
@click.option("--verbose", type=click.IntRange(0, 2), default=0, show_default=True, help="Keras verbosity")
def add_head_cmd(run: str, data: str, heads: tuple[str, ...], out: str, retrain_joint: bool, verbose: int) -> None:
    """Grow a frozen-base RUN by new head(s) trained on cached features; write NEW_RUN (--out).

    \b
    python -m train add-head runs/mnv2 --data data/merged --head colour --out runs/mnv2+colour
    """
    try:
        from train.add_head import add_heads
        from train.fit import summary_table

        record = add_heads(run, data, heads, out, retrain_joint=retrain_joint, verbose=verbose,
                           log=lambda s: click.echo(s))
    except (PolyheadError, OSError) as e:
        raise _fail(e) from None
    click.echo(summary_table(record))
    a = record["add_head"]
    click.echo(f"added {', '.join(a['heads'])} in {a['wall_s']:.1f} s "
               f"(features {a['feature_extract_s']:.1f} s, training {a['train_s']:.1f} s); wrote {RunLayout(Path(out)).train_record}")


@main.command("backbones")
@click.argument("pattern", default="*")
def backbones_cmd(pattern: str) -> None:
    """List registered backbones (shell pattern), with default input size."""
    from train.backbones import backbone_spec, list_backbones

    for name in list_backbones(pattern):
        s = backbone_spec(name)
        click.echo(f"{name:20s} {s.default_size:4d}px  {s.description}")


if __name__ == "__main__":
    main()
