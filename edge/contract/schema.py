"""The label schema: which heads a model has, each head's classes, and the joint combinations.

One definition shared by every stage (datasets, training, conversion, the edge). The number of
heads is data: a schema of one, two or five heads flows through the same code.

Class lists are sorted strings, so a schema is determined by the labels alone. The joint
combinations are the label tuples seen in the *train* split, sorted; the joint approach can only
ever output one of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import PolyheadError

SCHEMA_FORMAT_VERSION = 1
JOINT_OUTPUT = "joint"
"""Name of the single output of a joint model (and of its key in label dicts)."""
JOINT_SEPARATOR = "/"
"""Separator of a combination's display name, e.g. ``Toyota/SUV``."""


class SchemaError(PolyheadError):
    """A label schema is malformed, or a label is not in it."""


def all_heads_right(
    probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], heads: Sequence[str]
) -> np.ndarray:
    """Per image, True when the top-1 class of every head in ``heads`` is its label.

    ``probs[h]`` is (N, K) scores, ``labels[h]`` (N,) class indices; the mean is the joint accuracy.
    """
    right = np.ones(len(labels[heads[0]]) if heads else 0, dtype=bool)
    for h in heads:
        right &= np.asarray(probs[h]).argmax(-1) == np.asarray(labels[h])
    return right


@dataclass(frozen=True)
class Head:
    """One attribute: a name (a labels.csv column) and its mutually exclusive classes."""

    name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise SchemaError(f"a head needs a non-empty name. Received: name={self.name!r}")
        if self.name == JOINT_OUTPUT:
            raise SchemaError(f"'{JOINT_OUTPUT}' is reserved for the joint output and cannot name a head")
        if len(self.classes) < 2:
            raise SchemaError(
                f"head '{self.name}' needs at least 2 classes. Received: classes={list(self.classes)}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise SchemaError(f"head '{self.name}' has duplicate classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    def index(self, label: str) -> int:
        """Class index of ``label``; a label outside the head is a SchemaError naming both."""
        try:
            return self._index[label]
        except KeyError:
            raise SchemaError(f"'{label}' is not a class of head '{self.name}'") from None


@dataclass(frozen=True)
class LabelSchema:
    """Heads in column order plus the label combinations present in the train split."""

    heads: tuple[Head, ...]
    combinations: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if not self.heads:
            raise SchemaError("a schema needs at least one head")
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise SchemaError(f"duplicate head names: {names}")
        for combo in self.combinations:
            if len(combo) != len(self.heads):
                raise SchemaError(f"combination {combo} does not have one label per head {names}")
            for head, label in zip(self.heads, combo, strict=True):
                head.index(label)
        if len(set(self.combinations)) != len(self.combinations):
            raise SchemaError("duplicate combinations")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_labels(
        cls,
        head_names: Sequence[str],
        rows: Iterable[Sequence[str]],
        train_rows: Iterable[Sequence[str]] | None = None,
    ) -> LabelSchema:
        """Build a schema from label tuples (one label per head, in ``head_names`` order).

        Classes come from ``rows`` (every split, so a class seen only in test still has an index);
        combinations come from ``train_rows`` (defaults to ``rows``).
        """
        rows = [tuple(r) for r in rows]
        train = rows if train_rows is None else [tuple(r) for r in train_rows]
        heads = tuple(
            Head(name, tuple(sorted({r[i] for r in rows}))) for i, name in enumerate(head_names)
        )
        return cls(heads, tuple(sorted(set(train))))

    # -- queries --------------------------------------------------------------------------------

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def num_combinations(self) -> int:
        return len(self.combinations)

    def head(self, name: str) -> Head:
        for h in self.heads:
            if h.name == name:
                return h
        raise SchemaError(f"unknown head '{name}'. Known heads: {list(self.head_names)}")

    def combination_name(self, combo: Sequence[str]) -> str:
        return JOINT_SEPARATOR.join(combo)

    @cached_property
    def _combo_index(self) -> dict[tuple[str, ...], int]:
        return {c: i for i, c in enumerate(self.combinations)}

    def joint_index(self, labels: Sequence[str]) -> int:
        """Index of a label tuple among the train combinations; -1 if it was never seen in train."""
        return self._combo_index.get(tuple(labels), -1)

    def encode(self, labels: Sequence[str]) -> tuple[int, ...]:
        """Class indices, one per head, of a label tuple."""
        if len(labels) != len(self.heads):
            raise SchemaError(f"expected {len(self.heads)} labels {list(self.head_names)}, got {list(labels)}")
        return tuple(h.index(label) for h, label in zip(self.heads, labels, strict=True))

    @cached_property
    def combination_indices(self) -> np.ndarray:
        """(num_combinations, num_heads) int array: the class index of each head in each combination."""
        return np.array([self.encode(c) for c in self.combinations], dtype=np.int64).reshape(
            len(self.combinations), len(self.heads)
        )

    def membership(self, head: str) -> np.ndarray:
        """(num_combinations, num_classes) float32 0/1 matrix: combination -> the head's class."""
        i = self.head_names.index(self.head(head).name)
        m = np.zeros((self.num_combinations, self.head(head).num_classes), dtype=np.float32)
        m[np.arange(self.num_combinations), self.combination_indices[:, i]] = 1.0
        return m

    def decode_joint(self, joint_probs: np.ndarray) -> dict[str, np.ndarray]:
        """Per-head class probabilities from joint probabilities (..., num_combinations).

        The score of a head's class is the sum of the probabilities of the combinations holding it.
        """
        joint_probs = np.asarray(joint_probs, dtype=np.float32)
        if joint_probs.shape[-1] != self.num_combinations:
            raise SchemaError(
                f"joint output has {joint_probs.shape[-1]} scores, the schema {self.num_combinations} combinations"
            )
        return {name: joint_probs @ m for name, m in self._memberships.items()}

    def head_probs(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-head probabilities from a model's outputs keyed by output name.

        Head outputs pass through; a ``joint`` output is decoded into every head (``decode_joint``).
        The one joint decoder of the project: Keras outputs, converted files and the device use it.
        """
        heads = {k: v for k, v in outputs.items() if k != JOINT_OUTPUT}
        if JOINT_OUTPUT in outputs:
            heads.update(self.decode_joint(outputs[JOINT_OUTPUT]))
        return heads

    @cached_property
    def _memberships(self) -> dict[str, np.ndarray]:
        # Built once per schema: decode_joint runs per image on the device.
        return {h.name: self.membership(h.name) for h in self.heads}

    # -- serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SCHEMA_FORMAT_VERSION,
            "heads": [{"name": h.name, "classes": list(h.classes)} for h in self.heads],
            "combinations": [list(c) for c in self.combinations],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelSchema:
        if not isinstance(d, Mapping):
            raise SchemaError(f"a schema must be a JSON object. Received: {type(d).__name__}")
        version = d.get("format_version")
        if version != SCHEMA_FORMAT_VERSION:
            raise SchemaError(f"unknown schema format_version {version!r} (this polyhead reads {SCHEMA_FORMAT_VERSION})")
        try:
            heads = tuple(Head(str(h["name"]), tuple(str(c) for c in h["classes"])) for h in d["heads"])
            combos = tuple(tuple(str(x) for x in c) for c in d["combinations"])
        except (KeyError, TypeError) as e:
            raise SchemaError(f"malformed schema: {e!r}") from None
        return cls(heads, combos)

    def save(self, path: str | Path) -> Path:
        from edge.io import atomic_write_json

        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LabelSchema:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            raise SchemaError(f"{path}: cannot read schema: {e}") from None
        except SchemaError as e:
            raise SchemaError(f"{path}: {e}") from None
