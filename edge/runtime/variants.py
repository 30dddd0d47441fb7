"""The variants of a deployment: .tflite files grouped by their cards' (variant, precision), checked
to fit together (one schema, one input size, one approach, every head served once)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.contract.card import CardError, ModelCard
from edge.contract.card_archive import read_card
from edge.contract.schema import LabelSchema
from edge.errors import PolyheadError
from edge.text import printable


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
            raise CardError(f"{printable(p)}: its label schema differs from {files[0].name}'s in variant {vid}")
        if (c.input.height, c.input.width) != (first.input.height, first.input.width):
            raise CardError(f"{printable(p)}: input size differs from {files[0].name}'s in variant {vid}")
        if c.approach != first.approach:
            raise CardError(f"{printable(p)}: approach {c.approach} differs from {first.approach} in variant {vid}")
    served: dict[str, Path] = {}
    for p, c in items:
        for h in c.heads:
            if h in served:
                raise CardError(f"{printable(p)}: head '{h}' is already served by {served[h].name} in variant {vid}")
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
            raise CardError(f"{printable(path)}: no .tflite files")
        return files
    if path.is_file():
        return [path]
    what = "not a regular file or folder" if os.path.lexists(path) else "no such file or folder"
    raise CardError(f"{printable(path)}: {what}")


def discover(path: str | os.PathLike, errors: list[tuple[str, str]] | None = None,
             trusted_key: Any = None) -> dict[str, Variant]:
    """Group the .tflite files at ``path`` (a file or a folder, not recursive) into variants.

    A file or variant that cannot be used raises ``CardError`` (``SignatureError`` for a file not
    signed by ``trusted_key``, a public key PEM path or loaded key, when one is given); pass
    ``errors`` (a list) to have them appended as ``(path_or_variant, message)`` and skipped instead.
    """
    if isinstance(trusted_key, (str, os.PathLike)):
        from edge.safety.signing import load_public_key

        trusted_key = load_public_key(trusted_key)
    path = Path(path)
    partial = not path.is_dir()  # one file of a separate variant, given on its own, answers its heads
    files = tflite_files(path)
    groups: dict[str, list[tuple[Path, ModelCard]]] = {}
    for f in files:
        try:
            if trusted_key is not None:
                from edge.safety.signing import verify

                verify(f, trusted_key)  # before anything else reads the file
            card = read_card(f)
        except PolyheadError as e:
            if errors is None:
                raise
            errors.append((printable(f), str(e)))
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


DEFAULT_PRECISIONS = ("int8", "float16", "float32")
"""The multihead precision picked when a folder holds several variants, first found first: int8 is
what a Pi runs fastest."""


def default_variant(variants: dict[str, Variant]) -> Variant | None:
    """The variant to run when none is named among several: multihead, int8 when present (the design's
    proposed model); None when the folder has no multihead variant."""
    multihead = {v.precision: v for v in variants.values() if v.approach == "multihead"}
    for precision in DEFAULT_PRECISIONS:
        if precision in multihead:
            return multihead[precision]
    return next(iter(sorted(multihead.items())), (None, None))[1]


def select_variant(variants: dict[str, Variant], name: str | None) -> Variant:
    """The variant called ``name`` (an id, or a variant name if only one precision has it). Without a
    name: the only variant, else ``default_variant`` (logged), else a CardError asking for one."""
    if not variants:
        raise CardError("no usable variant")
    if name is None:
        if len(variants) == 1:
            return next(iter(variants.values()))
        chosen = default_variant(variants)
        if chosen is None:
            raise CardError(f"several variants found and none is multihead, choose one with --variant: "
                            f"{sorted(variants)}")
        import logging

        logging.getLogger(__name__).info("several variants found, using %s (choose another with --variant: %s)",
                                         chosen.id, ", ".join(sorted(variants)))
        return chosen
    if name in variants:
        return variants[name]
    matches = [v for v in variants.values() if v.variant == name]
    if len(matches) == 1:
        return matches[0]
    raise CardError(f"unknown variant. Received: {name!r}; found: {sorted(variants)}")
