"""The catalogue: which label combinations exist, and the joint answer restricted to them.

A head per attribute can name a combination no train image showed (a make's new body type), and
it can also name one that does not exist at all. Where the valid combinations are known (Stanford
Cars' 196 classes, a maker's model list), a ``catalogue.csv`` beside a dataset's labels.csv lists
them: one column per head, by name in any order, one row per combination. The joint answer is then
the listed combination with the highest summed log-probability of every head, instead of each
head's own top class. Only the decoding changes: the model and its per-head softmaxes are the same,
and a combination the catalogue lists but train never held can still be named.

A row whose class a head does not know (a catalogue wider than the data) is skipped and counted; a
missing head column or a malformed file is a ``CatalogueError``, one line naming the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import PolyheadError, first_line
from edge.safety.paths import open_regular
from edge.text import printable

CATALOGUE_FILE = "catalogue.csv"
MAX_BYTES = 16 << 20
"""A catalogue is a list of combinations, not a dataset: larger files are refused unread."""


class CatalogueError(PolyheadError):
    """A catalogue.csv cannot be read or lacks a head (one line, naming the file)."""


@dataclass(frozen=True)
class Catalogue:
    """The valid combinations as class indices, one column per head in ``heads`` order."""

    heads: tuple[str, ...]
    rows: np.ndarray
    """(combinations, heads) int64, unique, sorted."""
    skipped: int = 0
    """Rows naming a class some head does not know."""

    def decode(self, probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per head, the class of the listed combination with the highest sum of log-probabilities
        (``probs[h]``: (N, classes) softmax outputs); ties go to the first combination in order."""
        n = len(np.asarray(probs[self.heads[0]]))
        if len(self.rows) == 0:
            return {h: np.full(n, -1, np.int64) for h in self.heads}
        score = np.zeros((n, len(self.rows)))
        for j, h in enumerate(self.heads):
            logp = np.log(np.clip(np.asarray(probs[h], np.float64), 1e-30, None))
            score += logp[:, self.rows[:, j]]
        best = self.rows[np.argmax(score, axis=1)]
        return {h: best[:, j] for j, h in enumerate(self.heads)}


def read_catalogue(path: str | Path, classes: Mapping[str, Sequence[str]]) -> Catalogue:
    """Read ``path`` for the heads and classes of ``classes`` (head -> class names in index order).

    Columns other than the heads are ignored; empty cells and unknown classes skip the row."""
    path = Path(path)
    name = printable(path)
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_BYTES + 1)
    except PolyheadError as e:
        raise CatalogueError(first_line(e)) from None
    except OSError as e:
        raise CatalogueError(f"{name}: cannot read ({e.strerror or type(e).__name__})") from None
    if len(raw) > MAX_BYTES:
        raise CatalogueError(f"{name}: larger than {MAX_BYTES >> 20} MiB; a catalogue lists combinations")
    try:
        table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CatalogueError(f"{name}: not a UTF-8 CSV file: {first_line(e)}") from None
    if not table:
        raise CatalogueError(f"{name}: empty (the header names the heads: {','.join(classes)})")
    header = [c.strip() for c in table[0]]
    heads = tuple(classes)
    missing = [h for h in heads if h not in header]
    if missing:
        raise CatalogueError(f"{name}: no column for head '{printable(missing[0])}' (the header names the heads: "
                             f"{','.join(heads)})")
    cols = [header.index(h) for h in heads]
    index = {h: {c: i for i, c in enumerate(classes[h])} for h in heads}
    rows, skipped = [], 0
    for line, cells in enumerate(table[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise CatalogueError(f"{name} row {line}: {len(cells)} fields, the header has {len(header)}")
        combo = [index[h].get(cells[c].strip(), -1) for h, c in zip(heads, cols, strict=True)]
        if min(combo) < 0:
            skipped += 1
            continue
        rows.append(combo)
    arr = np.unique(np.asarray(rows, np.int64).reshape(-1, len(heads)), axis=0)
    return Catalogue(heads, arr, skipped)


def write_catalogue(path: str | Path, heads: Sequence[str], combinations: Sequence[Sequence[str]]) -> Path:
    """Write a catalogue.csv atomically: a header of head names, one sorted row per combination."""
    from edge.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(heads))
    for combo in sorted({tuple(c) for c in combinations}):
        writer.writerow(list(combo))
    return atomic_write_text(Path(path), buf.getvalue())
