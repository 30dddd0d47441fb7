"""``python -m datasets merge``: the union of dataset folders whose heads may differ.

The paper's "data fusion": one folder labelled for ``make`` only and another labelled for ``type``
only become one dataset whose rows carry the labels they have. Rules:

- heads are the union of the sources' heads, in first-seen order; a source's missing heads are
  empty cells (``MISSING``: not labelled for that head);
- rows are keyed by the image's *bytes* (sha256): the same picture listed twice, in one source or
  in several, becomes one row whose labels are the union of the rows' labels;
- two different labels for one head of the same picture are an error naming both sources;
- a row's split is kept; a row without one (blank cell, or a source with no ``split`` column)
  gets one from the ``--split`` policy; two different splits for one picture are an error (a test
  image must not also be a train image);
- images are referenced where they are (``dataset.json`` records the common ``image_root``) or
  copied into ``OUT/images`` (``--copy``, named by content hash);
- the output is built in a temporary folder next to ``OUT``, validated with ``load_dataset`` and
  then moved into place: a failed merge leaves ``OUT`` as it was.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets.folder import (
    LABELS_FILE,
    MISSING,
    REQUIRED_SPLITS,
    SPLITS,
    DatasetError,
    _escapes,
    _image_root,
    _is_absolute,
    load_dataset,
    read_labels,
    read_meta,
    write_labels_csv,
)
from edge.io import atomic_write_json, file_sha256

SOURCE = "merge"
DEFAULT_SPLIT_POLICY = "hash:80/10/10"


@dataclass(frozen=True)
class SplitPolicy:
    """How a row without a split gets one: a fixed split, or shares of train/val/test by content hash.

    A hash policy is a function of the image's bytes alone, so re-running a merge, or merging the
    same image from another source, always gives the same split.
    """

    fixed: str | None = None
    shares: tuple[int, int, int] = (80, 10, 10)

    @classmethod
    def parse(cls, text: str) -> SplitPolicy:
        """``train`` | ``val`` | ``test`` | ``hash:TRAIN/VAL/TEST`` (percentages summing to 100)."""
        text = text.strip()
        if text in REQUIRED_SPLITS:
            return cls(fixed=text)
        kind, sep, rest = text.partition(":")
        if kind == "hash" and sep:
            try:
                shares = tuple(int(x) for x in rest.split("/"))
            except ValueError:
                shares = ()
            if len(shares) == 3 and sum(shares) == 100 and min(shares) >= 0:
                return cls(shares=shares)  # type: ignore[arg-type]
        raise DatasetError(
            f"--split policy must be train, val, test or hash:TRAIN/VAL/TEST (percentages summing to 100). "
            f"Received: {text!r}"
        )

    def split_for(self, digest: str) -> str:
        if self.fixed is not None:
            return self.fixed
        bucket = int(digest[:8], 16) % 100
        train, val, _ = self.shares
        return "train" if bucket < train else "val" if bucket < train + val else "test"


@dataclass(frozen=True)
class _Row:
    where: str
    """``<source>/labels.csv row N``: how errors name it."""
    path: Path
    split: str
    labels: dict[str, str]


@dataclass(frozen=True)
class MergeSummary:
    """What a merge wrote."""

    out: Path
    heads: tuple[str, ...]
    rows: int
    duplicates_merged: int
    split_assigned: int
    unlabelled_skipped: int
    labelled: dict[str, int]
    split_sizes: dict[str, int]
    copied: bool

    def format(self) -> str:
        lines = [
            f"merged into {self.out}: {self.rows} rows, heads {', '.join(self.heads)}",
            "  " + "  ".join(f"{s}={n}" for s, n in self.split_sizes.items()),
            "  labelled rows: " + "  ".join(f"{h}={n}" for h, n in self.labelled.items()),
            f"  same image twice (one row kept): {self.duplicates_merged}",
            f"  split assigned by policy: {self.split_assigned}",
            f"  rows with no label (skipped): {self.unlabelled_skipped}",
            f"  images {'copied into ' + str(self.out / 'images') if self.copied else 'referenced in place'}",
        ]
        return "\n".join(lines)


def _read_source(root: Path, allow_outside_paths: bool) -> tuple[list[str], list[_Row], int]:
    """(heads, rows, rows with every head empty) of one source; split may be blank or absent."""
    csv_path = root / LABELS_FILE
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: not found (a dataset folder needs a {LABELS_FILE})")
    image_root = _image_root(root, read_meta(root))
    table = read_labels(csv_path, require_split=False)
    heads = list(table.heads)
    rows: list[_Row] = []
    unlabelled = 0
    for row in table.rows:
        where, image, split = table.where(row), row.image, row.split
        if not image:
            raise DatasetError(f"{where}: blank image path")
        if split and split not in SPLITS:
            raise DatasetError(f"{where}: unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        labels = dict(zip(heads, row.labels, strict=True))
        if all(v == MISSING for v in labels.values()):
            unlabelled += 1
            continue
        if not allow_outside_paths and (_is_absolute(image) or _escapes(image)):
            raise DatasetError(f"{where}: image path '{image}' leaves the dataset folder "
                               "(use --allow-outside-paths to accept it)")
        path = Path(image) if _is_absolute(image) else image_root / posixpath.normpath(image.replace("\\", "/"))
        if not path.is_file():
            raise DatasetError(f"{where}: image file '{image}' not found ({path})")
        rows.append(_Row(where, path, split, labels))
    return heads, rows, unlabelled


def _check_folders(roots: Sequence[Path], out: Path) -> None:
    """Raise unless every source is a folder and ``out`` is neither a source nor someone else's folder."""
    if len(roots) < 1:
        raise DatasetError("merge needs at least one source folder")
    for r in roots:
        if not r.is_dir():
            raise DatasetError(f"{r}: not a folder")
        if out.resolve() == r.resolve():
            raise DatasetError(f"{out}: --out is one of the sources; choose another folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and read_meta(out).get("source") != SOURCE)):
        raise DatasetError(f"{out}: exists and is not an empty folder or an earlier merge; choose another --out")


def _merge_pair(prev: _Row, row: _Row) -> _Row:
    """One row for a picture listed twice: labels and split united; a conflict is a DatasetError."""
    labels = dict(prev.labels)
    for h, v in row.labels.items():
        if v == MISSING:
            continue
        if labels.get(h, MISSING) not in (MISSING, v):
            raise DatasetError(
                f"conflicting labels for one image: {prev.where} says {h}={labels[h]!r}, "
                f"{row.where} says {h}={v!r}"
            )
        labels[h] = v
    if prev.split and row.split and prev.split != row.split:
        raise DatasetError(
            f"conflicting splits for one image: {prev.where} puts it in {prev.split}, "
            f"{row.where} in {row.split}"
        )
    return _Row(prev.where, prev.path, prev.split or row.split, labels)


def _union(roots: Sequence[Path], allow_outside_paths: bool) -> tuple[list[str], dict[str, _Row], int, int]:
    """(heads, rows by image sha256 in first-seen order, duplicates merged, unlabelled rows skipped)
    of every source."""
    heads: list[str] = []
    merged: dict[str, _Row] = {}  # sha256 -> merged row (labels/split filled from every source)
    duplicates = unlabelled = 0
    for root in roots:
        src_heads, rows, skipped = _read_source(root, allow_outside_paths)
        unlabelled += skipped
        heads += [h for h in src_heads if h not in heads]
        for row in rows:
            digest = file_sha256(row.path)
            prev = merged.get(digest)
            if prev is not None:
                duplicates += 1
                row = _merge_pair(prev, row)
            merged[digest] = row
    return heads, merged, duplicates, unlabelled


def _copy_images(tmp: Path, merged: dict[str, _Row]) -> dict[str, str]:
    """Copy every image into ``tmp/images``, named by its hash; sha256 -> path in labels.csv."""
    (tmp / "images").mkdir()
    names: dict[str, str] = {}
    for d, row in merged.items():
        name = f"images/{d[:24]}{row.path.suffix.lower()}"
        shutil.copyfile(row.path, tmp / name)
        names[d] = name
    return names


def _images_in_place(merged: dict[str, _Row], fallback: Path) -> tuple[Path, dict[str, str]]:
    """(image_root, sha256 -> path in labels.csv): one image_root above every image keeps paths
    relative and inside it (``fallback`` when there are no images)."""
    resolved = {d: row.path.resolve() for d, row in merged.items()}
    image_root = Path(os.path.commonpath([str(p.parent) for p in resolved.values()])) if merged else fallback
    return image_root, {d: p.relative_to(image_root).as_posix() for d, p in resolved.items()}


def merge_datasets(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    copy: bool = False,
    split_policy: str = DEFAULT_SPLIT_POLICY,
    allow_outside_paths: bool = False,
) -> MergeSummary:
    """Merge dataset folders ``sources`` into ``out`` (see the module docstring for the rules).

    Raises DatasetError (one line) on conflicting labels or splits, a bad source or an output
    that would not load; ``out`` is then left untouched.
    """
    policy = SplitPolicy.parse(split_policy)
    out = Path(out)
    roots = [Path(s) for s in sources]
    _check_folders(roots, out)
    heads, merged, duplicates, unlabelled = _union(roots, allow_outside_paths)
    assigned = sum(1 for row in merged.values() if not row.split)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        meta: dict[str, object] = {"source": SOURCE, "sources": [str(r) for r in roots],
                                   "split_policy": split_policy, "copied": copy}
        if copy:
            names = _copy_images(tmp, merged)
        else:
            image_root, names = _images_in_place(merged, parent)
            meta["image_root"] = str(image_root)
        write_labels_csv(tmp, heads, [
            (names[d], row.split or policy.split_for(d), [row.labels.get(h, MISSING) for h in heads])
            for d, row in merged.items()
        ])
        atomic_write_json(tmp / "dataset.json", meta)
        ds = load_dataset(tmp, allow_outside_paths=allow_outside_paths)  # the output must load
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    labelled = {h: sum(1 for r in ds.records if r.labels[i] != MISSING) for i, h in enumerate(ds.heads)}
    return MergeSummary(out=out, heads=ds.heads, rows=len(ds.records), duplicates_merged=duplicates,
                        split_assigned=assigned, unlabelled_skipped=unlabelled, labelled=labelled,
                        split_sizes=ds.split_sizes, copied=copy)


def _replace_folder(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an earlier merge there is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old.{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
