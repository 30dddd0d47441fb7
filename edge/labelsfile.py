"""The one labels.csv reader: the same rules for ``datasets`` (check, load, merge) and the device.

A labels.csv has a header row naming its columns, then one row per image. Columns are found by
name, in any order: ``image`` (a path), ``split`` (``train``, ``val``, ...; ``merge`` sources may
omit it) and every other column is a head, in header order. The rules, in one place:

- UTF-8, a spreadsheet's byte-order mark tolerated; only a regular file is read, inside its own
  folder (a symlink to a file elsewhere is refused);
- header names are stripped; a blank or repeated name, a missing ``image`` (or ``split``) column,
  or no head column is a fault;
- a blank row (no cells, or only whitespace) is skipped; a row with another field count than the
  header is a fault;
- cells are stripped; an empty head cell means "not labelled for this head".

What the rows mean (known splits, duplicate images, classes) is the caller's business:
``datasets.folder`` checks a dataset, the device only looks labels up. A fault is one
``LabelsFileError`` line naming the file and the row; it never quotes the file's contents (the
device reads files it did not write).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edge.errors import PolyheadError, first_line
from edge.paths import open_regular
from edge.text import printable

IMAGE_COLUMN = "image"
SPLIT_COLUMN = "split"
HEADER_HINT = "image,split,<head>..."


class LabelsFileError(PolyheadError):
    """A labels.csv cannot be read or breaks the rules above (one line, naming the file and row)."""


@dataclass(frozen=True)
class LabelsRow:
    """One non-blank row: its line number in the file, image path, split ("" without a split
    column) and labels in ``LabelsFile.heads`` order (stripped; "" where not labelled)."""

    line: int
    image: str
    split: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelsFile:
    """A labels.csv read by the rules: its head names (header order) and rows."""

    path: Path
    heads: tuple[str, ...]
    rows: tuple[LabelsRow, ...]
    has_split: bool = True

    def where(self, row: LabelsRow) -> str:
        """``"FILE row N"`` for a message about ``row``."""
        return f"{printable(self.path)} row {row.line}"


def _columns(header: list[str], path: Path, require_split: bool) -> tuple[int, int | None, list[int]]:
    """(image column, split column or None, head columns) of a stripped header, by name."""
    name = printable(path)
    if any(not h for h in header):
        raise LabelsFileError(f"{name}: a column has a blank name (the header is {HEADER_HINT})")
    repeated = sorted(h for h, n in Counter(header).items() if n > 1)
    if repeated:
        raise LabelsFileError(f"{name}: duplicate column {printable(repr(repeated[0]))}")
    needed = (IMAGE_COLUMN, SPLIT_COLUMN) if require_split else (IMAGE_COLUMN,)
    for column in needed:
        if column not in header:
            raise LabelsFileError(f"{name}: not a labels.csv: missing column '{column}' (the header is {HEADER_HINT})")
    heads = [i for i, h in enumerate(header) if h not in (IMAGE_COLUMN, SPLIT_COLUMN)]
    if not heads:
        raise LabelsFileError(f"{name}: no head columns besides 'image' and 'split'")
    return header.index(IMAGE_COLUMN), header.index(SPLIT_COLUMN) if SPLIT_COLUMN in header else None, heads


def read_labels_file(path: str | os.PathLike, inside: str | os.PathLike | None = None,
                     require_split: bool = True) -> LabelsFile:
    """Read a labels.csv by the module's rules (inside the folder ``inside``, by default its own).

    Raises ``LabelsFileError`` for a fault of the file, ``edge.paths.PathError`` for one of the
    path (a symlink out of the folder, a FIFO, a NUL byte)."""
    path = Path(path)
    name = printable(path)
    try:
        with open_regular(path, inside if inside is not None else path.parent) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise LabelsFileError(f"{name}: empty file (expected a header: {HEADER_HINT})")
            header = [h.strip() for h in header]
            i_image, i_split, i_heads = _columns(header, path, require_split)
            rows = []
            width = len(header)
            for line, cells in enumerate(reader, start=2):
                if not cells or all(not c.strip() for c in cells):
                    continue  # blank lines carry nothing
                if len(cells) != width:
                    raise LabelsFileError(f"{name} row {line}: {len(cells)} fields, the header has {width}")
                rows.append(LabelsRow(line, cells[i_image].strip(),
                                      cells[i_split].strip() if i_split is not None else "",
                                      tuple(cells[i].strip() for i in i_heads)))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelsFileError(f"{name}: cannot read ({printable(first_line(e))})") from None
    return LabelsFile(path, tuple(header[i] for i in i_heads), tuple(rows), i_split is not None)
