"""The on-disk dataset form: a folder with images and a ``labels.csv``, loaded and validated.

``labels.csv`` has a column ``image`` (a path relative to the folder), a column ``split``
(``train``, ``val``, ``test``, optionally ``test_unseen``) and one column per head, found by name
in any order by the one reader the device uses too (``edge.runtime.labelsfile``).
An empty cell in a head's column means "not labelled for this head" (each attribute can be
labelled on its own); a row with every head empty carries nothing and is skipped and counted.
Every source (synthetic, Stanford Cars, a user's own folder) is turned into this form, and every
later stage reads only this form.

An optional ``dataset.json`` next to ``labels.csv`` describes the folder (its source, generator
settings). Its one key that changes loading is ``image_root``: importers that leave images where
they are (``python -m datasets stanford-cars`` without ``--copy``) record the external folder there,
and ``image`` paths are then relative to it. Paths must still stay inside that root.

An optional ``catalogue.csv`` lists the label combinations that exist (edge/contract/catalogue.py);
the reports then also score the joint answer restricted to them.

Bad input is a ``DatasetError`` whose one-line message names the file, the row and the value.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import shutil
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edge.contract.catalogue import Catalogue
from edge.contract.schema import LabelSchema, SchemaError
from edge.errors import PolyheadError
from edge.runtime.labelsfile import IMAGE_COLUMN, SPLIT_COLUMN, LabelsFile, LabelsFileError, read_labels_file
from edge.safety.paths import PathError

LABELS_FILE = "labels.csv"
META_FILE = "dataset.json"
SPLITS = ("train", "val", "test", "test_unseen")
"""Every split name a labels.csv may use, in display order."""
REQUIRED_SPLITS = ("train", "val", "test")
"""Splits that must hold at least one image; ``test_unseen`` is optional."""
MISSING = ""
"""A head's label in a row not labelled for that head (an empty labels.csv cell)."""


class DatasetError(PolyheadError):
    """A dataset folder or its labels.csv is malformed; the message names the file, row or value."""


@dataclass(frozen=True)
class Record:
    """One labelled image: its path as written in labels.csv, its resolved path, split and labels.

    ``labels`` has one entry per head; ``MISSING`` ("") where the image is not labelled for it."""

    image: str
    path: Path
    split: str
    labels: tuple[str, ...]

    @property
    def fully_labelled(self) -> bool:
        """True when every head has a label."""
        return all(label != MISSING for label in self.labels)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset folder: heads in column order, every record, and the label schema."""

    root: Path
    heads: tuple[str, ...]
    records: tuple[Record, ...]
    schema: LabelSchema
    image_root: Path | None = None
    """Where ``image`` paths are relative to; ``root`` unless dataset.json names another folder."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    """The content of dataset.json (empty when there is none)."""
    unlabelled_rows: int = 0
    """Rows of labels.csv with every head empty: skipped (not in ``records``), counted here."""

    def split(self, name: str) -> tuple[Record, ...]:
        """The records of split ``name`` (empty for a known split with no rows)."""
        if name not in SPLITS:
            raise DatasetError(f"unknown split '{name}'. Known splits: {list(SPLITS)}")
        return tuple(r for r in self.records if r.split == name)

    @property
    def split_sizes(self) -> dict[str, int]:
        """Number of records per split present, in SPLITS order."""
        counts = Counter(r.split for r in self.records)
        return {s: counts[s] for s in SPLITS if counts[s]}


def _is_absolute(image: str) -> bool:
    # Windows drive or UNC paths count as absolute too: a labels.csv may come from anywhere.
    return PurePosixPath(image).is_absolute() or PureWindowsPath(image).is_absolute() or bool(
        PureWindowsPath(image).drive
    )


def _escapes(image: str) -> bool:
    """True if the relative path leaves its folder once normalised (``a/../../x``)."""
    norm = posixpath.normpath(image.replace("\\", "/"))
    return norm == ".." or norm.startswith("../")


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """The folder's dataset.json as a dict, or {} if it has none."""
    path = Path(root) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: must hold a JSON object. Received: {type(meta).__name__}")
    return meta


def _image_root(root: Path, meta: dict[str, Any]) -> Path:
    value = meta.get("image_root")
    if value is None:
        return root
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{root / META_FILE}: image_root must be a non-empty string. Received: {value!r}")
    image_root = Path(value)
    if not image_root.is_absolute():
        image_root = root / image_root
    if not image_root.is_dir():
        raise DatasetError(f"{root / META_FILE}: image_root '{value}' is not a folder")
    return image_root


def read_labels(csv_path: Path, require_split: bool = True) -> LabelsFile:
    """A labels.csv read by the one reader the device uses too (``edge.runtime.labelsfile``: columns found
    by name, the same rules everywhere); a fault is a one-line DatasetError."""
    try:
        return read_labels_file(csv_path, require_split=require_split)
    except (LabelsFileError, PathError) as e:
        raise DatasetError(str(e)) from None


def _refuse_outside_path(where: str, image: str) -> None:
    """Raise if ``image`` is absolute or climbs out of the image root."""
    if _is_absolute(image):
        raise DatasetError(
            f"{where}: absolute image path '{image}' refused (use --allow-outside-paths to accept it)"
        )
    if _escapes(image):
        raise DatasetError(
            f"{where}: image path '{image}' leaves the dataset folder "
            "(use --allow-outside-paths to accept it)"
        )


def _read_records(
    table: LabelsFile,
    image_root: Path,
    allow_outside_paths: bool,
    require_files: bool,
) -> tuple[list[Record], int]:
    """(records, rows with every head empty) of the labels.csv's rows, each row checked."""
    records: list[Record] = []
    seen: dict[str, int] = {}
    unlabelled = 0
    for row in table.rows:
        where, image, split, labels = table.where(row), row.image, row.split, row.labels
        if not image:
            raise DatasetError(f"{where}: blank image path")
        if not split:
            raise DatasetError(f"{where}: blank split")
        if split not in SPLITS:
            raise DatasetError(f"{where}: unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        if all(label == MISSING for label in labels):
            unlabelled += 1  # nothing to learn or score; counted so the user sees it
            continue
        if not allow_outside_paths:
            _refuse_outside_path(where, image)
        key = posixpath.normpath(image.replace("\\", "/"))
        if key in seen:
            raise DatasetError(f"{where}: image '{image}' is already listed at row {seen[key]}")
        seen[key] = row.line
        path = Path(image) if _is_absolute(image) else image_root / key
        if require_files and not path.is_file():
            raise DatasetError(f"{where}: image file '{image}' not found ({path})")
        records.append(Record(image=image, path=path, split=split, labels=labels))
    return records, unlabelled


def _check_records(csv_path: Path, heads: tuple[str, ...], records: Sequence[Record], unlabelled: int) -> None:
    """Raise unless there are records, every required split has some and every head has 2+ classes."""
    if not records:
        raise DatasetError(f"{csv_path}: no rows after the header"
                           + (f" with a label ({unlabelled} rows have every head empty)" if unlabelled else ""))
    present = Counter(r.split for r in records)
    for split in REQUIRED_SPLITS:
        if not present[split]:
            raise DatasetError(f"{csv_path}: split '{split}' is empty (every dataset needs train, val and test rows)")
    for i, head in enumerate(heads):
        classes = sorted({r.labels[i] for r in records} - {MISSING})
        if not classes:
            raise DatasetError(f"{csv_path}: head '{head}' has no labelled row; a head needs at least 2 classes")
        if len(classes) < 2:
            raise DatasetError(
                f"{csv_path}: head '{head}' has only one class {classes[0]!r}; a head needs at least 2"
            )


def load_dataset(
    root: str | os.PathLike,
    allow_outside_paths: bool = False,
    require_files: bool = True,
) -> Dataset:
    """Read and validate ``root/labels.csv`` into a Dataset with its LabelSchema.

    ``allow_outside_paths`` accepts image paths that are absolute or climb out of the image root
    (``../x.jpg``); without it they are refused, so a labels.csv from elsewhere cannot make
    training read arbitrary files. ``require_files=False`` skips the existence check (``check``
    reports missing files instead of failing on the first).
    """
    root = Path(root)
    csv_path = root / LABELS_FILE
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: not found (a dataset folder needs a {LABELS_FILE})")
    meta = read_meta(root)
    image_root = _image_root(root, meta)
    table = read_labels(csv_path)
    heads = table.heads
    records, unlabelled = _read_records(table, image_root, allow_outside_paths, require_files)
    _check_records(csv_path, heads, records, unlabelled)
    try:
        schema = schema_from_records(heads, records)
    except SchemaError as e:
        raise DatasetError(f"{csv_path}: {e}") from None
    return Dataset(
        root=root, heads=heads, records=tuple(records), schema=schema, image_root=image_root, meta=meta,
        unlabelled_rows=unlabelled,
    )


def dataset_catalogue(root: str | os.PathLike, schema: LabelSchema) -> Catalogue | None:
    """The folder's ``catalogue.csv`` (edge.contract.catalogue) for ``schema``'s heads, or None
    without one. A folder with one head has no combinations to restrict."""
    from edge.contract.catalogue import CATALOGUE_FILE, read_catalogue

    path = Path(root) / CATALOGUE_FILE
    if len(schema.heads) < 2 or not path.exists():
        return None
    return read_catalogue(path, {h.name: h.classes for h in schema.heads})


def schema_from_records(heads: Sequence[str], records: Sequence[Record]) -> LabelSchema:
    """The schema of ``records``: each head's classes from its labelled cells (every split), the
    joint combinations from the *fully labelled* train rows (a partial row is no combination)."""
    from edge.contract.schema import Head

    return LabelSchema(
        tuple(Head(h, tuple(sorted({r.labels[i] for r in records} - {MISSING}))) for i, h in enumerate(heads)),
        tuple(sorted({r.labels for r in records if r.split == "train" and r.fully_labelled})),
    )


def write_labels_csv(
    root: str | os.PathLike,
    heads: Sequence[str],
    rows: Sequence[tuple[str, str, Sequence[str]]],
) -> Path:
    """Write ``root/labels.csv`` atomically from (image, split, labels) rows."""
    import io

    from edge.io import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([IMAGE_COLUMN, SPLIT_COLUMN, *heads])
    for image, split, labels in rows:
        writer.writerow([image, split, *labels])
    return atomic_write_text(Path(root) / LABELS_FILE, buf.getvalue())


def prepare_output(out: Path, source: str, description: str) -> None:
    """Create ``out``, or clear the previous ``source`` dataset there (its dataset.json says so);
    refuse any other non-empty folder, so a mistyped --out never deletes a user's files."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if read_meta(out).get("source") != source:
            raise DatasetError(f"{out}: folder is not empty and is not {description}; choose another --out")
        (out / LABELS_FILE).unlink(missing_ok=True)  # first, so a half-replaced folder is no dataset
        shutil.rmtree(out / "images", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


# -- check --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found: sizes, class and combination counts, and the files that fail."""

    root: Path
    image_root: Path
    heads: tuple[str, ...]
    split_sizes: dict[str, int]
    class_counts: dict[str, dict[str, dict[str, int]]]
    """head -> class -> split -> count."""
    combinations: dict[str, dict[str, int]]
    """combination name ("Make/Type") -> split -> count."""
    train_combinations: int
    missing: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]
    """(image, error) for files that exist but do not decode."""
    labelled: dict[str, dict[str, int]] = field(default_factory=dict)
    """head -> split -> rows labelled for that head; ``"all heads"`` counts the fully labelled rows."""
    unlabelled_rows: int = 0
    """Rows with every head empty (skipped)."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable

    def format(self, max_rows: int = 60) -> str:
        """A human-readable multi-line report."""
        lines = [f"dataset {self.root}" + (f" (images under {self.image_root})" if self.image_root != self.root else "")]
        total = sum(self.split_sizes.values())
        lines.append(f"images: {total}  " + "  ".join(f"{s}={n}" for s, n in self.split_sizes.items()))
        splits = list(self.split_sizes)
        if self.labelled:
            lines.append(f"  {'labelled rows':<28}" + "".join(f"{s:>12}" for s in splits))
            for head, per in self.labelled.items():
                lines.append(f"  {head:<28}" + "".join(
                    f"{f'{per.get(s, 0)}/{self.split_sizes[s]}':>12}" for s in splits))
        lines.append(f"rows with no label (skipped): {self.unlabelled_rows}")
        for head in self.heads:
            classes = self.class_counts[head]
            lines.append(f"head '{head}': {len(classes)} classes")
            lines.append(f"  {'class':<28}" + "".join(f"{s:>12}" for s in splits))
            for name in list(classes)[:max_rows]:
                lines.append(f"  {name:<28}" + "".join(f"{classes[name].get(s, 0):>12}" for s in splits))
            if len(classes) > max_rows:
                lines.append(f"  ... {len(classes) - max_rows} more")
        lines.append(
            f"combinations: {len(self.combinations)} present, {self.train_combinations} in train"
        )
        only_outside = [c for c, per in self.combinations.items() if not per.get("train")]
        if only_outside:
            lines.append(f"  never in train: {', '.join(only_outside[:max_rows])}")
        lines.append(f"missing files: {len(self.missing)}")
        lines.extend(f"  {m}" for m in self.missing[:max_rows])
        lines.append(f"unreadable files: {len(self.unreadable)}")
        lines.extend(f"  {e}" for _, e in self.unreadable[:max_rows])
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def _probe(path: Path) -> str | None:
    from edge.runtime.preprocess import load_image

    try:
        # A full decode (draft-scaled for JPEG) finds truncated data that a header check misses.
        load_image(path, 32, 32)
    except Exception as e:  # noqa: BLE001 - every failure is a finding, never a crash
        return str(e).splitlines()[0] if str(e) else f"{path}: {type(e).__name__}"
    return None


def check(root: str | os.PathLike, allow_outside_paths: bool = False, workers: int | None = None) -> CheckReport:
    """Validate a dataset folder and decode every image: class counts, combinations, bad files.

    Structural problems (columns, labels, splits, paths) raise DatasetError; missing and
    unreadable images are collected in the report instead.
    """
    ds = load_dataset(root, allow_outside_paths=allow_outside_paths, require_files=False)
    class_counts: dict[str, dict[str, dict[str, int]]] = {}
    for i, head in enumerate(ds.heads):
        per: dict[str, dict[str, int]] = {c: {} for c in ds.schema.head(head).classes}
        for r in ds.records:
            if r.labels[i] != MISSING:
                per[r.labels[i]][r.split] = per[r.labels[i]].get(r.split, 0) + 1
        class_counts[head] = per
    labelled = {h: dict(Counter(r.split for r in ds.records if r.labels[i] != MISSING))
                for i, h in enumerate(ds.heads)}
    labelled["all heads"] = dict(Counter(r.split for r in ds.records if r.fully_labelled))
    combos: dict[str, dict[str, int]] = {}
    for r in sorted((r for r in ds.records if r.fully_labelled), key=lambda r: r.labels):
        name = ds.schema.combination_name(r.labels)
        combos.setdefault(name, {})
        combos[name][r.split] = combos[name].get(r.split, 0) + 1
    missing = tuple(r.image for r in ds.records if not r.path.is_file())
    missing_set = set(missing)
    present = [r for r in ds.records if r.image not in missing_set]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        errors = list(pool.map(_probe, (r.path for r in present)))
    unreadable = tuple((r.image, e) for r, e in zip(present, errors, strict=True) if e is not None)
    return CheckReport(
        root=ds.root,
        image_root=ds.image_root or ds.root,
        heads=ds.heads,
        split_sizes=ds.split_sizes,
        class_counts=class_counts,
        combinations=combos,
        train_combinations=ds.schema.num_combinations,
        missing=missing,
        unreadable=unreadable,
        labelled=labelled,
        unlabelled_rows=ds.unlabelled_rows,
    )
