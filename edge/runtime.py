"""Run polyhead .tflite files: find the variants of a deployment, load them, predict.

The interpreter is LiteRT's (``ai_edge_litert``), falling back to ``tflite_runtime`` (the older
package many Raspberry Pi users still run). Outputs are always read by *signature name* through
``get_signature_runner``: TFLite's tensor order and tensor names (``StatefulPartitionedCall:0``)
are not the model's. Every file's card is checked against the signature it actually has before
anything runs, so a card that does not describe its model is a one-line ``CardError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.card import CardError, ModelCard, read_card
from edge.preprocess import ImageError, load_image
from edge.schema import JOINT_OUTPUT, LabelSchema

RUNTIME_ENV = "POLYHEAD_RUNTIME"
"""Set to ``tflite-runtime`` or ``ai-edge-litert`` to force one interpreter package."""

_RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite_runtime"),
)


class ModelError(ValueError):
    """A .tflite file cannot be loaded or run by the interpreter (one line naming the file)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def load_interpreter_class(prefer: str | None = None) -> tuple[type, str, str]:
    """The TFLite ``Interpreter`` class, its package name and version.

    ``prefer`` (or the ``POLYHEAD_RUNTIME`` environment variable) picks a package; otherwise
    ai-edge-litert, then tflite-runtime.
    """
    import importlib

    prefer = prefer or os.environ.get(RUNTIME_ENV) or None
    candidates = [r for r in _RUNTIMES if prefer in (None, r[0])]
    if not candidates:
        raise ModelError(f"unknown runtime. Received: {prefer!r}; known: {[r[0] for r in _RUNTIMES]}")
    errors = []
    for name, module, package in candidates:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            errors.append(f"{module}: {_first_line(e)}")
            continue
        version = getattr(importlib.import_module(package), "__version__", "") or dist_version(name)
        return mod.Interpreter, name, version
    raise ModelError(
        "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime==2.14.0 with numpy<2 on "
        f"Python <= 3.11). Tried: {'; '.join(errors)}"
    )


def dist_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or "" if it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


# -- variants -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Files whose cards share (variant, precision): one model, or N ``separate`` single-head ones."""

    id: str
    """``<variant>.<precision>``, e.g. ``multihead.int8``."""
    variant: str
    precision: str
    approach: str
    files: tuple[Path, ...]
    cards: tuple[ModelCard, ...]

    @property
    def schema(self) -> LabelSchema:
        return self.cards[0].schema

    @property
    def heads(self) -> tuple[str, ...]:
        """Heads the variant answers, in schema order (all of them unless one ``separate`` file was
        given on its own)."""
        served = {h for c in self.cards for h in c.heads}
        return tuple(h for h in self.schema.head_names if h in served)

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def variant_id(card: ModelCard) -> str:
    """The id a file's card puts it under: ``<variant>.<precision>``."""
    return f"{card.variant}.{card.precision}"


def _make_variant(vid: str, items: list[tuple[Path, ModelCard]], partial: bool = False) -> Variant:
    items = sorted(items, key=lambda pc: pc[0].name)
    files = tuple(p for p, _ in items)
    cards = tuple(c for _, c in items)
    first = cards[0]
    for p, c in items[1:]:
        if c.schema != first.schema:
            raise CardError(f"{p}: its label schema differs from {files[0].name}'s in variant {vid}")
        if (c.input.height, c.input.width) != (first.input.height, first.input.width):
            raise CardError(f"{p}: input size differs from {files[0].name}'s in variant {vid}")
        if c.approach != first.approach:
            raise CardError(f"{p}: approach {c.approach} differs from {first.approach} in variant {vid}")
    served: dict[str, Path] = {}
    for p, c in items:
        for h in c.heads:
            if h in served:
                raise CardError(f"{p}: head '{h}' is already served by {served[h].name} in variant {vid}")
            served[h] = p
    missing = [h for h in first.schema.head_names if h not in served]
    if missing and not partial:
        raise CardError(f"variant {vid}: no file serves head(s) {missing} (files: {[f.name for f in files]})")
    return Variant(vid, first.variant, first.precision, first.approach, files, cards)


def tflite_files(path: Path) -> list[Path]:
    """The .tflite files at ``path``: the file itself, or a folder's (not recursive), sorted."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".tflite" and p.is_file())
        if not files:
            raise CardError(f"{path}: no .tflite files")
        return files
    if path.is_file():
        return [path]
    raise CardError(f"{path}: no such file or folder")


def discover(path: str | os.PathLike, errors: list[tuple[str, str]] | None = None) -> dict[str, Variant]:
    """Group the .tflite files at ``path`` (a file or a folder, not recursive) into variants.

    A file or variant that cannot be used raises ``CardError``; pass ``errors`` (a list) to have
    them appended as ``(path_or_variant, message)`` and skipped instead.
    """
    path = Path(path)
    partial = not path.is_dir()  # one file of a separate variant, given on its own, answers its heads
    files = tflite_files(path)
    groups: dict[str, list[tuple[Path, ModelCard]]] = {}
    for f in files:
        try:
            card = read_card(f)
        except CardError as e:
            if errors is None:
                raise
            errors.append((str(f), str(e)))
            continue
        groups.setdefault(variant_id(card), []).append((f, card))
    variants = {}
    for vid in sorted(groups):
        try:
            variants[vid] = _make_variant(vid, groups[vid], partial)
        except CardError as e:
            if errors is None:
                raise
            errors.append((vid, str(e)))
    return variants


def select_variant(variants: dict[str, Variant], name: str | None) -> Variant:
    """The variant called ``name`` (an id, or a variant name if only one precision has it)."""
    if not variants:
        raise CardError("no usable variant")
    if name is None:
        if len(variants) == 1:
            return next(iter(variants.values()))
        raise CardError(f"several variants found, choose one with --variant: {sorted(variants)}")
    if name in variants:
        return variants[name]
    matches = [v for v in variants.values() if v.variant == name]
    if len(matches) == 1:
        return matches[0]
    raise CardError(f"unknown variant. Received: {name!r}; found: {sorted(variants)}")


# -- one file -------------------------------------------------------------------------------------


def _input_lut(card: ModelCard, dtype: np.dtype) -> np.ndarray | None:
    """Map a uint8 pixel to the model's input value, as a 256-entry table (None: pixels go in as is)."""
    lo, hi = card.input.value_range
    values = lo + np.arange(256, dtype=np.float64) * ((hi - lo) / 255.0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.round(values / card.input.scale + card.input.zero_point), info.min, info.max)
    lut = values.astype(dtype)
    if dtype == np.uint8 and np.array_equal(lut, np.arange(256)):
        return None  # uint8 input with scale ~1, zero 0 over 0..255: raw pixels are the input
    return lut


class Model:
    """One .tflite file: its card, checked against its signature, and a ready signature runner."""

    def __init__(self, path: str | os.PathLike, card: ModelCard | None = None, num_threads: int = 1,
                 interpreter_class: type | None = None):
        self.path = Path(path)
        self.card = card if card is not None else read_card(self.path)
        cls = interpreter_class or load_interpreter_class()[0]
        name = str(self.path)
        try:
            # model_path lets the interpreter mmap the file (the card at its end is ignored).
            self.interpreter = cls(model_path=name, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            signatures = self.interpreter.get_signature_list()
        except Exception as e:  # the interpreter's own message, e.g. "not a valid Flatbuffer buffer"
            raise ModelError(f"{name}: cannot load model ({_first_line(e)})") from None
        sig = self.card.signature
        if sig not in signatures:
            raise CardError(f"{name}: card signature '{sig}' not in the model. Signatures: {sorted(signatures)}")
        try:
            self.runner = self.interpreter.get_signature_runner(sig)
            inputs = self.runner.get_input_details()
            outputs = self.runner.get_output_details()
        except Exception as e:
            raise ModelError(f"{name}: cannot read signature '{sig}' ({_first_line(e)})") from None
        self._check_input(inputs)
        self._check_outputs(outputs)
        self._invoke = self.interpreter._interpreter.Invoke  # see invoke_raw
        self._subgraph = getattr(self.runner, "_subgraph_index", 0)

    def _check_input(self, inputs: dict[str, dict[str, Any]]) -> None:
        spec, name = self.card.input, str(self.path)
        if list(inputs) != [spec.name]:
            raise CardError(f"{name}: card input '{spec.name}' but the signature's inputs are {sorted(inputs)}")
        d = inputs[spec.name]
        want = (spec.height, spec.width, spec.channels)
        got = tuple(int(x) for x in d["shape"][1:])
        if len(d["shape"]) != 4 or got != want:
            raise CardError(f"{name}: card input shape {want} but the model takes {tuple(int(x) for x in d['shape'])}")
        dtype = np.dtype(d["dtype"])
        if dtype.name != spec.dtype:
            raise CardError(f"{name}: card input dtype {spec.dtype} but the model takes {dtype.name}")
        if np.issubdtype(dtype, np.integer):
            scale, zero = d["quantization"]
            if not (np.isclose(scale, spec.scale, rtol=1e-4) and int(zero) == spec.zero_point):
                raise CardError(
                    f"{name}: card input quantisation (scale={spec.scale}, zero_point={spec.zero_point}) "
                    f"differs from the model's (scale={scale}, zero_point={zero})"
                )
        self.input_name = spec.name
        self.input_dtype = dtype
        self.input_shape = (1, *want)
        self._lut = _input_lut(self.card, dtype)
        # float32 over 0..255: the table is the identity, so a cast replaces the gather (decided once, not per image)
        self._cast_input = self._lut is not None and dtype == np.float32 and spec.value_range == (0.0, 255.0)
        self._input = np.zeros(self.input_shape, dtype=dtype)  # preallocated, reused every call

    def _check_outputs(self, outputs: dict[str, dict[str, Any]]) -> None:
        name = str(self.path)
        # (card key, signature output name, scale, zero point, is quantised): dequantise any int dtype
        self._outputs: list[tuple[str, str, np.float32, np.float32, bool]] = []
        for key, sig_name in self.card.outputs.items():
            if sig_name not in outputs:
                raise CardError(
                    f"{name}: card output '{key}' -> '{sig_name}' is not a signature output. "
                    f"Signature outputs: {sorted(outputs)}"
                )
            d = outputs[sig_name]
            size = int(d["shape"][-1])
            classes = self.card.output_classes(key)
            if size != len(classes):
                raise CardError(f"{name}: output '{sig_name}' has {size} scores but the card lists {len(classes)} classes for '{key}'")
            quantised = np.issubdtype(np.dtype(d["dtype"]), np.integer)
            scale, zero = d["quantization"] if quantised else (1.0, 0)
            if quantised and scale == 0:
                raise CardError(f"{name}: integer output '{sig_name}' has no quantisation parameters")
            self._outputs.append((key, sig_name, np.float32(scale), np.float32(zero), quantised))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.card.input.height, self.card.input.width

    def set_input(self, pixels: np.ndarray) -> np.ndarray:
        """The model input for one (H, W, 3) uint8 image: cast or quantised per the card (reuses a buffer)."""
        if self._lut is None:
            if pixels.dtype == np.uint8 and pixels.flags.c_contiguous and pixels.shape == self.input_shape[1:]:
                return pixels[None]  # a view: the signature runner's SetTensor is then the only copy
            self._input[0] = pixels
        elif self._cast_input:
            np.copyto(self._input[0], pixels, casting="unsafe")
        else:
            np.take(self._lut, pixels, out=self._input[0])
        return self._input

    def run(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Float scores (K,) per card output key (a head, or ``joint``) for one uint8 image."""
        result = self.runner(**{self.input_name: self.set_input(pixels)})
        out = {}
        for key, sig_name, scale, zero, quantised in self._outputs:
            raw = result[sig_name][0]
            out[key] = (raw.astype(np.float32) - zero) * scale if quantised else raw
        return out

    def invoke_raw(self) -> None:
        """The bare C++ invoke of this signature on whatever input is set (to measure Python overhead).

        ``Interpreter.invoke()`` itself refuses to run while a signature runner holds the interpreter
        ("There is at least 1 reference to internal data"); this calls the same wrapper method
        ``invoke()`` and the runner call, ``_interpreter.Invoke(subgraph)``, with nothing around it.
        """
        self._invoke(self._subgraph)


# -- predictions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadResult:
    """One head's answer for one image: the top label, its score, and the top-k (label, score)."""

    label: str
    score: float
    top_k: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Prediction:
    """One image's result: per-head answers, or an error message (then ``heads`` is empty)."""

    path: str
    heads: dict[str, HeadResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.path, "error": self.error}
        return {
            "image": self.path,
            "heads": {
                h: {"label": r.label, "score": round(r.score, 6),
                    "top_k": [[label, round(s, 6)] for label, s in r.top_k]}
                for h, r in self.heads.items()
            },
        }


class Predictor:
    """Runs a variant: every file it is made of, joint outputs decoded into heads."""

    def __init__(self, variant: Variant, num_threads: int = 1, runtime: str | None = None):
        cls, self.runtime, self.runtime_version = load_interpreter_class(runtime)
        self.variant = variant
        self.num_threads = num_threads
        self.models = tuple(Model(p, c, num_threads, cls) for p, c in zip(variant.files, variant.cards, strict=True))
        self.schema = variant.schema
        self.heads = variant.heads
        self.height, self.width = self.models[0].input_size
        self._classes = {h: self.schema.head(h).classes for h in self.heads}

    def predict_image(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Per-head class probabilities (K,) of one (H, W, 3) uint8 image."""
        probs: dict[str, np.ndarray] = {}
        for model in self.models:
            out = model.run(pixels)
            joint = out.pop(JOINT_OUTPUT, None)
            if joint is not None:
                out.update(self.schema.decode_joint(joint))
            probs.update(out)
        return probs

    def predict_array(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-head probabilities (N, K) for a uint8 batch (N, H, W, 3) at the card's size."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (self.height, self.width, 3) or batch.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 batch (N, {self.height}, {self.width}, 3). Received: {batch.dtype} {batch.shape}"
            )
        result = {h: np.empty((len(batch), len(c)), np.float32) for h, c in self._classes.items()}
        for i, pixels in enumerate(batch):  # one image at a time: the tensors never reallocate
            for h, p in self.predict_image(pixels).items():
                result[h][i] = p
        return result

    def load(self, path: str | os.PathLike | bytes) -> np.ndarray:
        """An image file as this variant's input pixels (raises ImageError)."""
        return load_image(path, self.height, self.width)

    def labels(self, probs: dict[str, np.ndarray], path: str, top_k: int = 1) -> Prediction:
        """A Prediction from one image's per-head probabilities."""
        heads = {}
        for h, p in probs.items():
            classes = self._classes[h]
            k = max(1, min(top_k, len(classes)))
            order = np.argsort(-p, kind="stable")[:k]
            top = tuple((classes[i], float(p[i])) for i in order)
            heads[h] = HeadResult(top[0][0], top[0][1], top)
        return Prediction(str(path), {h: heads[h] for h in self.heads})

    def predict_file(self, path: str | os.PathLike, top_k: int = 1) -> Prediction:
        """One image file to labels; an unreadable image gives a Prediction with ``error`` set."""
        try:
            pixels = self.load(path)
        except ImageError as e:
            return Prediction(str(path), {}, str(e))
        return self.labels(self.predict_image(pixels), str(path), top_k)

    def predict_files(self, paths: Iterable[str | os.PathLike], top_k: int = 1) -> list[Prediction]:
        """``predict_file`` over many files; errors are per file, the rest go on."""
        return [self.predict_file(p, top_k) for p in paths]

    def info(self) -> dict[str, Any]:
        return {"variant": self.variant.id, "runtime": self.runtime, "runtime_version": self.runtime_version,
                "threads": self.num_threads}


# -- labelled images ------------------------------------------------------------------------------


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
        raise CardError(f"{path}: cannot read labels ({_first_line(e)})") from None
    return heads, labels


@dataclass
class Accuracy:
    """Running per-head and joint (every head right) accuracy over labelled predictions."""

    heads: tuple[str, ...]
    columns: tuple[int, ...]
    """Where each head's label sits in a labels.csv row (its head columns)."""
    correct: dict[str, int]
    joint_correct: int = 0
    n: int = 0

    @classmethod
    def for_labels(cls, csv_heads: Sequence[str], heads: Sequence[str]) -> Accuracy:
        """Accuracy over the heads both the labels.csv (head columns ``csv_heads``) and the model have."""
        both = tuple(h for h in heads if h in csv_heads)
        return cls(both, tuple(list(csv_heads).index(h) for h in both), {h: 0 for h in both})

    def add(self, pred: Prediction, row: Sequence[str]) -> None:
        """Count one prediction against its labels.csv row (labels in ``csv_heads`` order)."""
        if not pred.ok:
            return
        self.n += 1
        all_right = True
        for h, i in zip(self.heads, self.columns, strict=True):
            right = pred.heads[h].label == row[i]
            self.correct[h] += right
            all_right &= right
        self.joint_correct += all_right

    def to_dict(self) -> dict[str, Any] | None:
        if self.n == 0:
            return None
        return {"heads": {h: self.correct[h] / self.n for h in self.heads},
                "joint": self.joint_correct / self.n, "n": self.n}


def missing_ops(message: str) -> list[str]:
    """Ops an interpreter's load error says it lacks, e.g. ``['FULLY_CONNECTED v12']``."""
    import re

    found = [f"{op} v{v}" for op, v in re.findall(r"builtin opcode '(\w+)' version '(\d+)'", message)]
    found += [f"custom {op}" for op in re.findall(r"unresolved custom op: (\w+)", message)]
    return sorted(set(found))


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas (``MALLOC_ARENA_MAX``, at run time) and a fixed
    128 kB mmap threshold.

    By default every thread that allocates gets its own arena, so the prefetch thread's image
    buffers sit in a second heap: about 2 MB more resident memory on a device for no speed gain.
    Process-wide; the CLI's predict and bench call it. Returns False where it does not apply."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = bool(libc.mallopt(-8, int(arenas)))  # -8 is M_ARENA_MAX in glibc's malloc.h
        # -3 is M_MMAP_THRESHOLD: image-sized buffers (>= 128 kB) get their own mapping and go back
        # to the system when freed, instead of glibc raising the threshold and keeping them in the heap.
        return bool(libc.mallopt(-3, 128 * 1024)) and ok
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl): nothing to tune


def iter_predictions(predictor: Predictor, paths: Iterable[str | os.PathLike], top_k: int = 1,
                     prefetch: int = 4):
    """Yield a Prediction per path, in order, decoding the next images in a background thread.

    Pillow and the interpreter both release the GIL, so decoding overlaps inference and the
    throughput approaches the slower of the two. Closing the generator early stops the thread.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        for p in paths:
            if stop.is_set():
                return
            try:
                item = (str(p), predictor.load(p), None)
            except ImageError as e:
                item = (str(p), None, str(e))
            except Exception as e:  # never let the thread die silently: report it for this file
                item = (str(p), None, f"{p}: {_first_line(e)}")
            if not put(item):
                return
        put(done)

    thread = threading.Thread(target=produce, name="polyhead-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            path, pixels, error = item
            if error is not None:
                yield Prediction(path, {}, error)
            else:
                yield predictor.labels(predictor.predict_image(pixels), path, top_k)
    finally:
        stop.set()
        thread.join(timeout=5)
