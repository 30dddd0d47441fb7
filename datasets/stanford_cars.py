"""Stanford Cars (Krause et al., 2013) into the on-disk dataset form, with make and type heads.

Three published layouts are read:

- devkit: ``devkit/cars_meta.mat`` (class_names), ``devkit/cars_train_annos.mat`` and
  ``cars_test_annos_withlabels.mat`` (at ROOT or in devkit/; without it the devkit's
  ``cars_test_annos.mat`` has no ``class`` and those test images are left out), images in
  ``cars_train/`` and ``cars_test/``;
- all-in-one: ``cars_annos.mat`` (relative_im_path, bbox, class, test flag, class_names) and ``car_ims/``;
- class folders: ``train/<class name>/`` and ``test/<class name>/``, a ``/`` in a name written ``-``.

.mat fields are read by name, never by position. Each of the 196 class names gives a make (the
leading word, or one of the multi-word makes) and a body type (its body word; the names that have
none, or more than one, are mapped in ``EXPLICIT_TYPES``).

Images stay where they are unless ``copy`` or ``crop_bbox`` is given: the output folder then holds
labels.csv with paths relative to ROOT and a dataset.json whose ``image_root`` names ROOT.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from datasets.folder import LABELS_FILE, META_FILE, DatasetError, prepare_output, write_labels_csv
from edge.contract.catalogue import CATALOGUE_FILE, write_catalogue
from edge.io import atomic_write_json

HEADS = ("make", "type")
MULTI_WORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
"""Makes of more than one word; every other make is the first word of the class name."""

BODY_WORDS = {
    "Sedan": "Sedan", "SUV": "SUV", "Coupe": "Coupe", "Convertible": "Convertible",
    "Hatchback": "Hatchback", "Wagon": "Wagon", "Van": "Van", "Minivan": "Van",
    "Cab": "Pickup", "SuperCab": "Pickup",
}
"""Body word in a class name -> type. Any ``... Cab`` (Crew, Regular, Extended, Quad, Club) is a pickup."""

EXPLICIT_TYPES: dict[str, tuple[str, str]] = {
    # Names with no body word: the body style of that model year.
    "Acura TL Type-S 2008": ("Sedan", "the TL is a four-door sedan"),
    "Acura Integra Type R 2001": ("Coupe", "the US Integra Type R is a three-door coupe"),
    "Buick Regal GS 2012": ("Sedan", "the 2012 Regal is a sedan only"),
    "Chevrolet Corvette ZR1 2012": ("Coupe", "the ZR1 is a fixed-roof coupe"),
    "Chevrolet Corvette Ron Fellows Edition Z06 2007": ("Coupe", "the Z06 is a fixed-roof coupe"),
    "Chevrolet HHR SS 2010": ("Wagon", "the HHR is a compact high-roof wagon"),
    "Chevrolet Cobalt SS 2010": ("Coupe", "the 2010 Cobalt SS was sold as a coupe"),
    "Chevrolet TrailBlazer SS 2009": ("SUV", "the TrailBlazer is a mid-size SUV"),
    "Chrysler 300 SRT-8 2010": ("Sedan", "the 300 is a sedan"),
    "Dodge Challenger SRT8 2011": ("Coupe", "the Challenger is a two-door coupe"),
    "Dodge Charger SRT-8 2009": ("Sedan", "the 2009 Charger is a four-door sedan"),
    "FIAT 500 Abarth 2012": ("Hatchback", "the 500 Abarth is a three-door hatchback"),
    "Jaguar XK XKR 2012": ("Coupe", "the XKR images are mostly the coupe"),
    "Lamborghini Gallardo LP 570-4 Superleggera 2012": ("Coupe", "the Superleggera is a coupe"),
    # Names whose body word is not last, or that hold two: the rule would be a guess, so say it.
    "Infiniti G Coupe IPL 2012": ("Coupe", "'Coupe' is followed by the trim name IPL"),
    "Ford E-Series Wagon Van 2012": ("Van", "a passenger van ('Wagon' is Ford's name for the passenger version)"),
    "Ram C/V Cargo Van Minivan 2012": ("Van", "a cargo minivan"),
    "Rolls-Royce Phantom Drophead Coupe Convertible 2012": ("Convertible", "'Drophead Coupe' is a convertible"),
}
"""Class name -> (type, why) for the names the body-word rule cannot settle by itself."""

@cache
def class_names() -> tuple[str, ...]:
    """The 196 Stanford Cars class names, in class-index order (index 1 is the first)."""
    # Next to this module (package data), not importlib.resources: an editable install made before
    # datasets/ had an __init__.py maps it as a namespace package, which resources cannot read.
    text = (Path(__file__).parent / "stanford_cars_class_names.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def parse_class_name(name: str, merge_makes: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(make, type) of a Stanford Cars class name such as ``"Aston Martin V8 Vantage Coupe 2012"``."""
    name = " ".join(name.split())
    make = next((m for m in MULTI_WORD_MAKES if name.startswith(m + " ")), name.split(" ")[0])
    if merge_makes:
        make = merge_makes.get(make, make)
    if name in EXPLICIT_TYPES:
        return make, EXPLICIT_TYPES[name][0]
    words = name.split(" ")
    if words and words[-1].isdigit():
        words = words[:-1]  # the model year
    if words and words[-1] in BODY_WORDS:
        return make, BODY_WORDS[words[-1]]
    raise DatasetError(
        f"class name '{name}' has no body word ({', '.join(BODY_WORDS)}) at its end and no entry in EXPLICIT_TYPES"
    )


def parse_merge_makes(specs: Sequence[str]) -> dict[str, str]:
    """``["AM General=HUMMER", "A=B,C=D"]`` -> {"AM General": "HUMMER", ...}."""
    merge: dict[str, str] = {}
    for spec in specs:
        for part in spec.split(","):
            if not part.strip():
                continue
            if part.count("=") != 1:
                raise DatasetError(f"--merge-makes expects FROM=TO pairs. Received: {part.strip()!r}")
            src, dst = (s.strip() for s in part.split("="))
            if not src or not dst:
                raise DatasetError(f"--merge-makes expects FROM=TO pairs. Received: {part.strip()!r}")
            merge[src] = dst
    return merge


# -- reading the layouts --------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """One annotated image as published: path relative to ROOT, its class name (unlabelled images
    are left out by the readers)."""

    rel: str
    class_name: str
    source_split: str  # "train" or "test", as published
    bbox: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2, 1-based inclusive


def _find(root: Path, *candidates: str) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_file()), None)


def detect_layout(root: str | os.PathLike) -> str:
    """Which published layout ``root`` holds: "devkit", "all-in-one" or "class-folders"."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if (root / "cars_annos.mat").is_file():
        return "all-in-one"
    if _find(root, "devkit/cars_train_annos.mat", "cars_train_annos.mat"):
        return "devkit"
    if (root / "train").is_dir() and any(p.is_dir() for p in (root / "train").iterdir()):
        return "class-folders"
    raise DatasetError(
        f"{root}: no Stanford Cars layout found (expected devkit/cars_train_annos.mat, cars_annos.mat, "
        "or train/<class name>/ folders)"
    )


def _loadmat(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=True)
    except Exception as e:  # noqa: BLE001 - scipy raises many types for a bad file
        raise DatasetError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from None


def _struct_rows(mat: dict[str, Any], path: Path, key: str, required: Sequence[str]) -> np.ndarray:
    if key not in mat:
        raise DatasetError(f"{path}: no '{key}' variable. Received: {sorted(k for k in mat if not k.startswith('__'))}")
    rows = np.atleast_1d(mat[key])
    names = rows.dtype.names or ()
    for f in required:
        if f not in names:
            raise DatasetError(f"{path}: '{key}' has no field '{f}'. Received fields: {list(names)}")
    return rows


def _scalar(value: Any) -> Any:
    value = np.asarray(value)
    return value.item() if value.size == 1 else value.reshape(-1)[0]


def _bbox(row: np.void, names: Sequence[str]) -> tuple[int, int, int, int] | None:
    keys = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
    if not all(k in names for k in keys):
        return None
    return tuple(int(_scalar(row[k])) for k in keys)  # type: ignore[return-value]


def _class_names_from(mat: dict[str, Any], path: Path) -> tuple[str, ...]:
    if "class_names" not in mat:
        raise DatasetError(f"{path}: no 'class_names' variable")
    return tuple(str(n).strip() for n in np.atleast_1d(mat["class_names"]))


def _class_of(row: np.void, names: tuple[str, ...], path: Path, i: int) -> str:
    idx = int(_scalar(row["class"]))
    if not 1 <= idx <= len(names):
        raise DatasetError(f"{path}: annotation {i + 1} has class {idx}, outside 1..{len(names)}")
    return names[idx - 1]


def _image_dir(root: Path, name: str) -> str:
    """``cars_train`` or the ``cars_train/cars_train`` some mirrors ship."""
    nested = root / name / name
    return f"{name}/{name}" if nested.is_dir() else name


def read_devkit(root: Path) -> tuple[list[Annotation], list[str]]:
    """Annotations of the devkit layout, and notes about what was left out."""
    notes: list[str] = []
    meta_path = _find(root, "devkit/cars_meta.mat", "cars_meta.mat")
    if meta_path is None:
        raise DatasetError(f"{root}: devkit layout without devkit/cars_meta.mat")
    names = _class_names_from(_loadmat(meta_path), meta_path)
    train_path = _find(root, "devkit/cars_train_annos.mat", "cars_train_annos.mat")
    assert train_path is not None  # detect_layout found it
    out: list[Annotation] = []
    train_dir = _image_dir(root, "cars_train")
    rows = _struct_rows(_loadmat(train_path), train_path, "annotations", ("fname", "class"))
    for i, row in enumerate(rows):
        out.append(Annotation(f"{train_dir}/{str(_scalar(row['fname'])).strip()}",
                              _class_of(row, names, train_path, i), "train", _bbox(row, rows.dtype.names)))
    test_path = _find(root, "cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")
    unlabelled = test_path is None
    test_path = test_path or _find(root, "devkit/cars_test_annos.mat", "cars_test_annos.mat")
    if test_path is None:
        notes.append("no test annotations found: the test split is taken from train")
        return out, notes
    test_dir = _image_dir(root, "cars_test")
    rows = _struct_rows(_loadmat(test_path), test_path, "annotations", ("fname",))
    if "class" not in (rows.dtype.names or ()):
        notes.append(
            f"{len(rows)} test images in {test_path.name} have no class label and are left out "
            "(add cars_test_annos_withlabels.mat to use them); the test split is taken from train"
        )
        return out, notes
    if unlabelled:
        notes.append(f"test labels read from {test_path.relative_to(root)}")
    for i, row in enumerate(rows):
        out.append(Annotation(f"{test_dir}/{str(_scalar(row['fname'])).strip()}",
                              _class_of(row, names, test_path, i), "test", _bbox(row, rows.dtype.names)))
    return out, notes


def read_all_in_one(root: Path) -> tuple[list[Annotation], list[str]]:
    """Annotations of the cars_annos.mat layout."""
    path = root / "cars_annos.mat"
    mat = _loadmat(path)
    names = _class_names_from(mat, path)
    rows = _struct_rows(mat, path, "annotations", ("relative_im_path", "class", "test"))
    out = []
    for i, row in enumerate(rows):
        rel = str(_scalar(row["relative_im_path"])).strip().replace("\\", "/")
        split = "test" if int(_scalar(row["test"])) else "train"
        out.append(Annotation(rel, _class_of(row, names, path, i), split, _bbox(row, rows.dtype.names)))
    return out, []


def read_class_folders(root: Path) -> tuple[list[Annotation], list[str]]:
    """Annotations of the train/<class>/ test/<class>/ layout (no bounding boxes)."""
    from edge.runtime.preprocess import is_image_file

    by_folder = {n.replace("/", "-"): n for n in class_names()}
    by_folder.update({n: n for n in class_names() if "/" not in n})
    out, notes = [], []
    for split in ("train", "test"):
        base = root / split
        if not base.is_dir():
            notes.append(f"no {split}/ folder" + ("; the test split is taken from train" if split == "test" else ""))
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            name = by_folder.get(folder.name)
            if name is None:
                raise DatasetError(f"{folder}: folder name is not a Stanford Cars class name")
            for f in sorted(folder.iterdir()):
                if f.is_file() and is_image_file(f):
                    out.append(Annotation(f"{split}/{folder.name}/{f.name}", name, split))
    return out, notes


READERS = {"devkit": read_devkit, "all-in-one": read_all_in_one, "class-folders": read_class_folders}


# -- the import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_stanford_cars`` wrote and found."""

    out: Path
    layout: str
    split_sizes: dict[str, int]
    makes: dict[str, tuple[str, ...]]
    """make -> the types it has in the data."""
    types: tuple[str, ...]
    combinations: int
    notes: tuple[str, ...]
    images_in_place: bool

    def format(self) -> str:
        lines = [
            f"wrote {self.out / LABELS_FILE} from the {self.layout} layout"
            + (" (images stay in place; dataset.json names their folder)" if self.images_in_place else ""),
            "  splits: " + "  ".join(f"{s}={n}" for s, n in self.split_sizes.items()),
            f"  {len(self.makes)} makes, {len(self.types)} types ({', '.join(self.types)}), "
            f"{self.combinations} make/type combinations",
        ]
        lines += [f"    {m}: {', '.join(t)}" for m, t in self.makes.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


_ImageJob = tuple[Path, Path, tuple[int, int, int, int] | None]
"""(source image, destination, crop box or None): one image to write into the output folder."""


def _crop(args: _ImageJob) -> str | None:
    from PIL import Image

    src, dst, bbox = args
    try:
        with Image.open(src) as img:
            img.load()
            if bbox is not None:
                x1, y1, x2, y2 = bbox
                w, h = img.size
                # Stanford boxes are 1-based and inclusive; clamp boxes that overrun the image.
                box = (max(0, x1 - 1), max(0, y1 - 1), min(w, x2), min(h, y2))
                if box[2] > box[0] and box[3] > box[1]:
                    img = img.crop(box)
            dst.parent.mkdir(parents=True, exist_ok=True)
            img.convert("RGB").save(dst, "JPEG", quality=95)
    except Exception as e:  # noqa: BLE001 - reported per file by the caller
        return f"{src}: {e}"
    return None


def _read_checked(root: Path, crop_bbox: bool) -> tuple[str, list[Annotation], list[str]]:
    """(layout, annotations, notes) of ROOT; no annotations, no boxes to crop by or a missing image
    file is a DatasetError."""
    layout = detect_layout(root)
    annotations, notes = READERS[layout](root)
    if not annotations:
        raise DatasetError(f"{root}: the {layout} layout has no annotated images")
    if crop_bbox and any(a.bbox is None for a in annotations):
        raise DatasetError(f"{root}: --crop-bbox needs bounding boxes, and the {layout} layout has none")
    missing = [a.rel for a in annotations if not (root / a.rel).is_file()]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} annotated images are missing, first: {missing[0]}")
    return layout, annotations, notes


def _labels_by_class(annotations: Sequence[Annotation], merge: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Class name -> (make, type) for every class in the data, makes merged by ``merge``."""
    parsed = {n: parse_class_name(n) for n in {a.class_name for a in annotations}}
    known_makes = {m for m, _ in parsed.values()}
    for src in merge:
        if src not in known_makes:
            raise DatasetError(f"--merge-makes: '{src}' is not a make in the data. Known makes: {sorted(known_makes)}")
    return {n: (merge.get(m, m), t) for n, (m, t) in parsed.items()}


def _split_of(annotations: Sequence[Annotation], val_fraction: float, seed: int) -> dict[str, str]:
    """Image path -> split: val (and test, when unlabelled) drawn per class from the published train
    images, seeded; published test images stay test."""
    rng = np.random.default_rng([seed, 4_242])
    has_test = any(a.source_split == "test" for a in annotations)
    split_of: dict[str, str] = {}
    by_class: dict[str, list[Annotation]] = defaultdict(list)
    for a in annotations:
        if a.source_split == "test":
            split_of[a.rel] = "test"
        else:
            by_class[a.class_name].append(a)
    for name in sorted(by_class):
        items = by_class[name]
        order = rng.permutation(len(items))
        n_val = int(round(len(items) * val_fraction)) if len(items) > 2 else 0
        n_val = max(n_val, 1) if len(items) >= 3 else n_val
        n_test = 0 if has_test else n_val
        for rank, j in enumerate(order):
            split_of[items[j].rel] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return split_of


def _rows_and_jobs(
    root: Path,
    out: Path,
    annotations: Sequence[Annotation],
    split_of: Mapping[str, str],
    labels: Mapping[str, tuple[str, str]],
    write_images: bool,
    crop_bbox: bool,
) -> tuple[list[tuple[str, str, tuple[str, str]]], list[_ImageJob]]:
    """The labels.csv rows, and the image writes they need when images go into ``out/images``."""
    rows = []
    jobs = []
    for a in annotations:
        rel = a.rel
        if write_images:
            dst_rel = "images/" + (rel if not crop_bbox else os.path.splitext(rel)[0] + ".jpg")
            jobs.append((root / rel, out / dst_rel, a.bbox if crop_bbox else None))
            rel = dst_rel
        rows.append((rel, split_of[a.rel], labels[a.class_name]))
    return rows, jobs


def _write_images(jobs: Sequence[_ImageJob], crop_bbox: bool, workers: int | None) -> None:
    """Crop each image to its box (``crop_bbox``, in threads) or copy it as it is."""
    if crop_bbox:
        with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
            errors = [e for e in pool.map(_crop, jobs) if e]
        if errors:
            raise DatasetError(f"{len(errors)} images could not be cropped, first: {errors[0]}")
    else:
        for src, dst, _ in jobs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def _summarise(
    out: Path, layout: str, rows: Sequence[tuple[str, str, tuple[str, str]]], notes: Sequence[str], in_place: bool
) -> ImportSummary:
    """The ImportSummary of the labels.csv ``rows`` just written."""
    makes: dict[str, set[str]] = defaultdict(set)
    for _, _, (m, t) in rows:
        makes[m].add(t)
    counts = Counter(s for _, s, _ in rows)
    return ImportSummary(
        out=out,
        layout=layout,
        split_sizes={s: counts[s] for s in ("train", "val", "test") if counts[s]},
        makes={m: tuple(sorted(makes[m])) for m in sorted(makes, key=str.lower)},
        types=tuple(sorted({t for _, _, (_, t) in rows})),
        combinations=len({lab for _, _, lab in rows}),
        notes=tuple(notes),
        images_in_place=in_place,
    )


def import_stanford_cars(
    root: str | os.PathLike,
    out: str | os.PathLike,
    merge_makes: Mapping[str, str] | None = None,
    crop_bbox: bool = False,
    val_fraction: float = 0.1,
    copy: bool = False,
    seed: int = 0,
    workers: int | None = None,
) -> ImportSummary:
    """Write ``out/labels.csv`` (+ dataset.json, catalogue.csv) for the Stanford Cars copy at ``root``.

    Train images are split into train and val (``val_fraction`` of each class, seeded); the
    published test split (when it has labels) is the test split. Without labelled test data the
    test split is taken from train like val, and the summary says so.
    """
    root = Path(root).resolve()
    out = Path(out)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"--val-fraction must be between 0 and 1. Received: val_fraction={val_fraction}")
    layout, annotations, notes = _read_checked(root, crop_bbox)
    merge = dict(merge_makes or {})
    labels = _labels_by_class(annotations, merge)
    split_of = _split_of(annotations, val_fraction, seed)

    if out.resolve() == root:
        raise DatasetError(f"--out {out} is ROOT itself; choose another folder")
    prepare_output(out, "stanford-cars", "a Stanford Cars import")
    write_images = copy or crop_bbox
    rows, jobs = _rows_and_jobs(root, out, annotations, split_of, labels, write_images, crop_bbox)
    if write_images:
        _write_images(jobs, crop_bbox, workers)

    meta = {
        "format_version": 1,
        "source": "stanford-cars",
        "layout": layout,
        "merge_makes": merge,
        "crop_bbox": crop_bbox,
        "val_fraction": val_fraction,
        "seed": seed,
        "notes": notes,
    }
    if not write_images:
        meta["image_root"] = str(root)
    atomic_write_json(out / META_FILE, meta)
    # Every class is a make/type combination that exists: the catalogue (edge/contract/catalogue.py).
    write_catalogue(out / CATALOGUE_FILE, HEADS, list(labels.values()))
    write_labels_csv(out, HEADS, rows)
    return _summarise(out, layout, rows, notes, in_place=not write_images)
