"""convert.json's verdicts and per-variant entries, from its per-file entries.

Pure functions of the document (and, for variants rebuilt in this conversion, a device check): a
partial reconversion keeps every untouched variant's check from the document as it was *before*
this conversion, which the caller read once, up front (convert.json is rewritten after every file).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from convert.check import verdict
from convert.records import CheckRecord, ConvertRecord, ConvertVariant
from edge.contract.schema import LabelSchema

DeviceCheck = Callable[[str, list[str]], "CheckRecord | None"]
"""``(variant id, its file names) -> check block`` measured as the device runs the variant, or None."""


def refresh_verdicts(doc: ConvertRecord) -> None:
    """Errors and warnings of every file from its stored checks, with today's bounds (kept files too)."""
    for name, entry in doc["files"].items():
        errors, warnings = verdict(name, entry["precision"], entry["check"])
        legacy = entry.get("runtime_compat", {}).get("tflite-runtime", {})
        if legacy.get("check"):
            where = f"{name} in {legacy.get('runtime')}"
            errs, warns = verdict(where, entry["precision"], legacy["check"])
            warnings += errs + warns
        elif legacy.get("status") == "fails":
            warnings.append(f"{name}: does not load in {legacy.get('runtime')}: {legacy.get('error')}")
        entry["errors"], entry["warnings"], entry["passed"] = errors, warnings, not errors


def group_variants(files: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{"<variant>.<precision>": [file names]}``: a separate variant is its files together."""
    groups: dict[str, list[str]] = {}
    for name, e in sorted(files.items()):
        groups.setdefault(f"{e['variant']}.{e['precision']}", []).append(name)
    return groups


def summarise(
    doc: ConvertRecord,
    schema: LabelSchema,
    previous_variants: Mapping[str, Any],
    changed: set[str],
    device_check: DeviceCheck | None,
) -> None:
    """Fill ``doc["variants"]`` and the top-level warning and error lists.

    A complete variant in ``changed`` is checked again through ``device_check`` (as the device
    runs it); any other keeps its check from ``previous_variants`` when its files are the same; a
    single-file complete variant without one takes its file's check.
    """
    variants: dict[str, ConvertVariant] = {}
    for vid, names in group_variants(doc["files"]).items():
        v = _variant_entry(doc, names, schema)
        check: CheckRecord | None = None
        if vid in changed and v["complete"] and device_check is not None:
            check = device_check(vid, names)
        elif "check" in previous_variants.get(vid, {}) and previous_variants[vid].get("files") == names:
            check = previous_variants[vid]["check"]
        if check is None and v["complete"] and len(names) == 1:
            check = doc["files"][names[0]]["check"]
        if check is not None:
            v["check"] = check
        if check is not None and len(names) > 1:
            # A separate variant's files were each checked alone; this is the set as the device runs it.
            errs, warns = verdict(vid, v["precision"], check)
            v["warnings"] += warns
            v["errors"] += errs
        variants[vid] = v
    doc["variants"] = variants
    file_warnings = [w for e in doc["files"].values() for w in e["warnings"]]
    doc["warnings"] = list(dict.fromkeys([w for w in doc["warnings"] if w.startswith("skipped")] + file_warnings))
    doc["errors"] = list(dict.fromkeys(
        [x for e in doc["files"].values() for x in e["errors"]] + [x for v in variants.values() for x in v["errors"]]
    ))


def _variant_entry(doc: ConvertRecord, names: list[str], schema: LabelSchema) -> ConvertVariant:
    entries = [doc["files"][n] for n in names]
    return ConvertVariant(
        approach=entries[0]["approach"],
        precision=entries[0]["precision"],
        files=names,
        bytes=sum(e["bytes"] for e in entries),
        complete={h for e in entries for h in e["heads"]} == set(schema.head_names),
        warnings=[w for e in entries for w in e["warnings"]],
        errors=[x for e in entries for x in e["errors"]],
    )
