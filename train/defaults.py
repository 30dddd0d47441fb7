"""The one place for default settings: read by ``python -m train``, ``report.pipeline`` (``make all``),
``report.experiments.paper``, ``report.experiments.compare`` and ``TrainConfig``; the Makefile's variables equal them (a test
reads the Makefile and compares).

A protocol is how the backbone learns (``PROTOCOLS``): ``frozen`` (the paper's: pretrained base
frozen, only the heads train, on features computed once per image), ``fine-tune`` (head-only
warm-up, then every layer at a lower learning rate with BatchNorm in inference mode) and
``scratch`` (random init, every layer trains). docs/training.md says how the values below were
chosen, with the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """How a run trains its backbone: what ``python -m train`` gets for it."""

    name: str
    weights: str | None
    """Forced weights (``none`` for scratch), or None: the run's ``--weights``."""
    freeze_base: bool
    warmup_epochs: int = 0
    fine_tune_learning_rate: float | None = None
    description: str = ""

    def settings(self) -> dict[str, object]:
        """The ``TrainConfig`` fields this protocol sets."""
        out: dict[str, object] = {"freeze_base": self.freeze_base, "warmup_epochs": self.warmup_epochs,
                                  "fine_tune_learning_rate": self.fine_tune_learning_rate}
        if self.weights is not None:
            out["weights"] = self.weights
        return out


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("frozen", None, True, description="pretrained base frozen; heads trained on cached features"),
        Protocol("fine-tune", None, False, warmup_epochs=3, fine_tune_learning_rate=1e-4,
                 description="head-only warm-up, then every layer at a lower rate, BatchNorm in inference mode"),
        Protocol("scratch", "none", False, description="random init, every layer trains"),
    )
}

COMPOSE_MODES = ("none", "additive", "projected", "projected-residual", "auto")
"""``--compose``: ``none``: plain heads; ``additive``: additive feature augmentation
(train/compose.py); ``projected``: the same augmentation, and each head's kernel kept orthogonal to
the other heads' components (train/subspace.py); ``projected-residual``: also to the pair-specific
directions no head's component explains; ``auto``: the one of these the run's own pair-held-out
folds prefer (train/autocompose.py)."""


@dataclass(frozen=True)
class Defaults:
    """Default settings of a run (the Makefile's variables, by the same names in lower case)."""

    data: str = "data/synthetic"
    run: str = "runs/default"
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    protocol: str = "frozen"
    image_size: int = 128
    """The synthetic images' own size: 224 (Lite0's native size) adds no detail and costs about 3x the
    backbone time per image (docs/training.md has the measurements)."""
    epochs: int = 12
    """Head epochs on cached features: validation accuracy is flat after about 10 (docs/training.md)."""
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    approaches: tuple[str, ...] = ("multihead", "joint", "separate")
    num_images: int = 6000
    synth_size: int = 128
    holdout_combos: int = 4
    precisions: tuple[str, ...] = ("float32", "int8")
    threads: int = 1
    bench_runs: int = 50
    bench_rounds: int = 8
    """``make bench``'s interleaved rounds (8: two runs agree within 0.02); ``make all``'s bench and
    ``python -m report.benchmarks.suite`` keep the edge bench's own 5 (``edge.bench.run.DEFAULT_ROUNDS``)."""
    bench_images: int = 100
    compose: str = "auto"
    """Heads trained on a frozen base's features: ``none`` (plain), ``additive`` (train/compose.py),
    ``projected``, ``projected-residual`` (train/subspace.py) or ``auto``: the one the run's own
    pair-held-out folds prefer (train/autocompose.py; docs/training.md has the measurements)."""
    pair_folds: int = 3
    """Pair-held-out validation folds of a frozen-base run (train/pairfold.py; 0: none)."""
    paper_weights: str = "none"
    """make paper's weights for alexnet/googlenet/squeezenet: none offline (structure and latency only)."""


DEFAULTS = Defaults()

MAKEFILE_VARIABLES: dict[str, str] = {
    "DATA": "data",
    "RUN": "run",
    "BACKBONE": "backbone",
    "WEIGHTS": "weights",
    "PROTOCOL": "protocol",
    "IMAGE_SIZE": "image_size",
    "EPOCHS": "epochs",
    "BATCH_SIZE": "batch_size",
    "SEED": "seed",
    "APPROACHES": "approaches",
    "NUM_IMAGES": "num_images",
    "SYNTH_SIZE": "synth_size",
    "HOLDOUT": "holdout_combos",
    "PRECISIONS": "precisions",
    "THREADS": "threads",
    "RUNS": "bench_runs",
    "ROUNDS": "bench_rounds",
    "PAPER_WEIGHTS": "paper_weights",
    "COMPOSE": "compose",
}
"""Makefile variable -> ``Defaults`` field (the test that keeps them equal reads this)."""


def as_text(value: object) -> str:
    """A default as written on a command line or in the Makefile (tuples comma-joined)."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
