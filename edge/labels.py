"""Labelled images: a datasets-stage labels.csv read on the device, and running accuracy."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.card import CardError
from edge.errors import first_line
from edge.predict import Prediction


def read_labels_csv(path: str | os.PathLike) -> tuple[tuple[str, ...], dict[Path, tuple[str, ...]]]:
    """A datasets-stage labels.csv: (head names, resolved image path -> labels). Rows are not checked
    against a schema here: a label a model does not know simply counts as wrong."""
    import csv

    path = Path(path)
    try:
        # utf-8-sig, as datasets.folder reads it: a labels.csv saved by a spreadsheet starts with a BOM.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or header[:2] != ["image", "split"] or len(header) < 3:
                raise CardError(f"{path}: header must be image,split,<head>... Received: {header}")
            heads = tuple(header[2:])
            labels = {}
            for n, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise CardError(f"{path}: row {n} has {len(row)} fields, expected {len(header)}")
                labels[(path.parent / row[0]).resolve()] = tuple(row[2:])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CardError(f"{path}: cannot read labels ({first_line(e)})") from None
    return heads, labels


@dataclass
class Accuracy:
    """Running per-head and joint (every head right) accuracy over labelled predictions.

    An empty labels.csv cell means "not labelled for this head": a head counts only the rows that
    carry its label, and joint accuracy only the rows that carry every head's label."""

    heads: tuple[str, ...]
    columns: tuple[int, ...]
    """Where each head's label sits in a labels.csv row (its head columns)."""
    correct: dict[str, int]
    joint_correct: int = 0
    n: int = 0
    labelled: dict[str, int] = field(default_factory=dict)
    """Rows counted per head (those with its label)."""
    joint_n: int = 0
    """Rows labelled for every head."""

    @classmethod
    def for_labels(cls, csv_heads: Sequence[str], heads: Sequence[str]) -> Accuracy:
        """Accuracy over the heads both the labels.csv (head columns ``csv_heads``) and the model have."""
        both = tuple(h for h in heads if h in csv_heads)
        return cls(both, tuple(list(csv_heads).index(h) for h in both), {h: 0 for h in both},
                   labelled={h: 0 for h in both})

    def add(self, pred: Prediction, row: Sequence[str]) -> None:
        """Count one prediction against its labels.csv row (labels in ``csv_heads`` order)."""
        if not pred.ok:
            return
        self.n += 1
        all_right = every_labelled = True
        for h, i in zip(self.heads, self.columns, strict=True):
            label = row[i].strip()
            if not label:
                every_labelled = False
                continue
            right = pred.heads[h].label == label
            self.labelled[h] += 1
            self.correct[h] += right
            all_right &= right
        if every_labelled:
            self.joint_n += 1
            self.joint_correct += all_right

    def to_dict(self) -> dict[str, Any] | None:
        """heads: accuracy of each head with labelled rows; heads_n: its count; joint over joint_n rows
        (None when no row has every head's label); n: predictions counted."""
        if self.n == 0:
            return None
        return {"heads": {h: self.correct[h] / self.labelled[h] for h in self.heads if self.labelled[h]},
                "heads_n": dict(self.labelled),
                "joint": self.joint_correct / self.joint_n if self.joint_n else None,
                "joint_n": self.joint_n, "n": self.n}
