"""Labelled images: a datasets-stage labels.csv read on the device, and running accuracy."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edge.bench.records import AccuracyRecord
from edge.runtime.predict import Prediction
from edge.safety.paths import walk_files


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, iterative, regular files only, symlinked folders not
    followed), sorted."""
    from edge.runtime.preprocess import is_image_file

    return walk_files(folder, is_image_file)


class LabelTable(Mapping[Path, tuple[str, ...]]):
    """One labels.csv's rows: image path -> labels. Keys are the rows' paths relative to the folder
    (resolved once, not once per row: a million-row file loads in seconds); a lookup resolves only
    the image's parent folder, cached per folder."""

    def __init__(self, base: str, rows: dict[str, tuple[str, ...]]):
        self.base = base
        self._rows = rows
        self._parents: dict[str, str] = {}

    def key(self, path: str | os.PathLike) -> str:
        """The row key of an image path (its real folder, relative to this table's folder)."""
        parent, name = os.path.split(os.path.abspath(os.fspath(path)))
        real = self._parents.get(parent)
        if real is None:
            real = self._parents[parent] = os.path.realpath(parent)
        full = os.path.join(real, name)
        return full[len(self.base) + 1:] if full.startswith(self.base + os.sep) else full

    def __getitem__(self, path: str | os.PathLike) -> tuple[str, ...]:
        try:
            return self._rows[self.key(path)]
        except (ValueError, TypeError):
            raise KeyError(path) from None

    def __iter__(self) -> Iterator[Path]:
        return (Path(self.base, k) for k in self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def _row_key(image: str) -> str | None:
    """A row's image path as a table key: relative and normalised (None: it cannot name a file)."""
    if "\0" in image or not image:
        return None
    if image.startswith("/") or "//" in image or image.startswith(".") or "/." in image:
        image = os.path.normpath(image)
    return image


def read_labels_csv(path: str | os.PathLike, inside: str | os.PathLike | None = None) -> tuple[tuple[str, ...], LabelTable]:
    """A datasets-stage labels.csv: (head names, image path -> labels), read by the one reader
    (``edge.runtime.labelsfile``: columns by name, the rules ``datasets check`` applies). Rows are not
    checked against a schema here: a label a model does not know simply counts as wrong. Only a
    regular file is read (inside the folder ``inside``, by default its own folder: a symlink to a
    file elsewhere is refused), and errors never quote the file's contents."""
    from edge.runtime.labelsfile import read_labels_file

    path = Path(path)
    table = read_labels_file(path, inside=inside)
    rows = {}
    for row in table.rows:
        image = row.image
        # Most rows are plain relative names: only the others pay for normalising (or skipping).
        if image[:1] in ("/", ".", "") or "/." in image or "//" in image or "\0" in image:
            image = _row_key(image)
            if image is None:
                continue
        rows[image] = row.labels
    return table.heads, LabelTable(os.path.realpath(path.parent), rows)


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
    catalogue_correct: int | None = None
    """Of those, the rows whose catalogue combination (``Prediction.catalogue``) is right; None
    while no prediction carried one."""

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
            if pred.catalogue is not None:
                right = all(pred.catalogue.get(h) == row[i].strip() for h, i in zip(self.heads, self.columns, strict=True))
                self.catalogue_correct = (self.catalogue_correct or 0) + right

    def to_dict(self) -> AccuracyRecord | None:
        """heads: accuracy of each head with labelled rows; heads_n: its count; joint over joint_n rows
        (None when no row has every head's label); n: predictions counted."""
        if self.n == 0:
            return None
        out = AccuracyRecord(heads={h: self.correct[h] / self.labelled[h] for h in self.heads if self.labelled[h]},
                             heads_n=dict(self.labelled),
                             joint=self.joint_correct / self.joint_n if self.joint_n else None,
                             joint_n=self.joint_n, n=self.n)
        if self.catalogue_correct is not None:
            out["joint_catalogue"] = self.catalogue_correct / self.joint_n
        return out
