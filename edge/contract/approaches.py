"""The approaches, one table: what each is made of and what its files output.

Training builds the models an approach's ``units`` name, conversion converts them, and the model
card checks a file against its approach's row; none of them compares approach strings. Adding an
approach means adding one row here (and its builder in train). Standard library only, like the
rest of ``edge.contract``: the device reads this table too.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.contract.schema import JOINT_OUTPUT, LabelSchema


@dataclass(frozen=True)
class ModelUnitSpec:
    """One model file of an approach: its stem (``separate.make``), the heads it predicts, its outputs."""

    stem: str
    heads: tuple[str, ...]
    approach: str = ""
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApproachSpec:
    """How an approach splits into model files and what those files output."""

    name: str
    one_model_per_head: bool
    """``separate``: one single-head model per head; otherwise one model covers every head."""
    joint_output: bool
    """The model has one output over the train combinations (``joint``), decoded into heads."""

    def stem(self, head: str | None = None) -> str:
        """The name of one model of this approach: the approach, or ``<approach>.<head>`` for a per-head one."""
        return self.name if head is None else f"{self.name}.{head}"

    def units(self, schema: LabelSchema) -> tuple[ModelUnitSpec, ...]:
        """The approach's model files for ``schema``, in head order."""
        if self.one_model_per_head:
            return tuple(ModelUnitSpec(self.stem(h), (h,), self.name, self.output_keys((h,))) for h in schema.head_names)
        return (ModelUnitSpec(self.stem(), schema.head_names, self.name, self.output_keys(schema.head_names)),)

    def output_keys(self, heads: tuple[str, ...]) -> tuple[str, ...]:
        """The output names of a model of this approach that predicts ``heads``."""
        return (JOINT_OUTPUT,) if self.joint_output else heads


_APPROACH_SPECS = (
    ApproachSpec("multihead", one_model_per_head=False, joint_output=False),
    ApproachSpec("joint", one_model_per_head=False, joint_output=True),
    ApproachSpec("separate", one_model_per_head=True, joint_output=False),
)
APPROACH_SPECS: dict[str, ApproachSpec] = {s.name: s for s in _APPROACH_SPECS}
APPROACHES: tuple[str, ...] = tuple(APPROACH_SPECS)
PER_HEAD_APPROACHES: tuple[str, ...] = tuple(s.name for s in _APPROACH_SPECS if s.one_model_per_head)
"""Approaches made of one single-head model per head (their model names carry the head)."""


def model_stem(approach: str, head: str | None = None) -> str:
    """The name of one model: ``multihead``, ``joint`` or ``separate.<head>``.

    Training writes ``models/<stem>.keras`` and conversion ``edge/<stem>.<precision>.tflite``;
    ``split_model_stem`` reads a stem back. A ValueError (one line) for a combination that is not one.
    """
    spec = APPROACH_SPECS.get(approach)
    if spec is None or spec.one_model_per_head != (head is not None) or head == "":
        raise ValueError(f"no model is named for approach={approach!r}, head={head!r}. Known approaches: {list(APPROACHES)}")
    return spec.stem(head)


def split_model_stem(stem: str) -> tuple[str, str | None]:
    """``(approach, head)`` of a stem ``model_stem`` made (head None but for one-model-per-head approaches).

    Any other name is a ValueError (one line) naming it and the known forms.
    """
    approach, _, head = stem.partition(".")
    spec = APPROACH_SPECS.get(approach)
    if spec is None or spec.one_model_per_head != bool(head):
        raise ValueError(f"unknown model name '{stem}'. Known: multihead, joint, separate.<head>")
    return approach, head or None


def output_size(schema: LabelSchema, output: str) -> int:
    """Number of classes of an output name (a head, or ``joint``: the train combinations)."""
    return schema.num_combinations if output == JOINT_OUTPUT else schema.head(output).num_classes
