"""Field-by-field validation of a model card's JSON before it becomes a ``ModelCard``.

``ModelCard``'s own checks say whether the values make sense together (approach, heads, outputs);
this says whether each field has the type it must have, and whether every string that the edge may
print is safe to print: no control characters, no surrogates, no bidi controls (``edge.text``).
Only ``extra`` (free-form provenance, never printed) is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from edge.text import BIDI_CONTROLS, is_unsafe_char, printable

MAX_STRING_CHARS = 1000
_STRING_FIELDS = ("variant", "approach", "precision", "backbone", "signature", "converter_version",
                  "tensorflow_version", "model_sha256")
_REQUIRED = ("variant", "approach", "precision", "heads", "outputs", "input", "schema")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def card_field_problem(d: Mapping[str, Any]) -> str | None:
    """The first thing wrong with the card dict ``d``'s fields (one line), or None."""
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        return f"no {missing[0]!r} field"
    for key in _STRING_FIELDS:
        if key in d and not isinstance(d[key], str):
            return f"field {key!r} must be a string. Received: {type(d[key]).__name__}"
    if d.get("model_sha256") and not _SHA256.fullmatch(d["model_sha256"]):
        return "field 'model_sha256' must be 64 lowercase hex digits"
    heads = d["heads"]
    if not isinstance(heads, list) or not all(isinstance(h, str) for h in heads):
        return "field 'heads' must be a list of strings"
    outputs = d["outputs"]
    if not isinstance(outputs, Mapping) or not all(isinstance(v, str) for v in outputs.values()):
        return "field 'outputs' must map names to strings"
    if not isinstance(d["input"], Mapping) or not isinstance(d["input"].get("name", ""), str):
        return "field 'input' must be an object with a string 'name'"
    problem = _runtime_compat_problem(d.get("runtime_compat"))
    if problem:
        return problem
    return _unsafe_string({k: v for k, v in d.items() if k != "extra"})


def _runtime_compat_problem(rc: Any) -> str | None:
    if rc is None:
        return None
    if not isinstance(rc, Mapping):
        return f"field 'runtime_compat' must be an object. Received: {type(rc).__name__}"
    for name, entry in rc.items():
        where = f"field runtime_compat[{printable(str(name))[:80]!r}]"
        if not isinstance(entry, Mapping):
            return f"{where} must be an object. Received: {type(entry).__name__}"
        if entry.get("loads") not in (True, False, None):
            return f"{where}.loads must be true, false or null"
        ops = entry.get("missing_ops", [])
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            return f"{where}.missing_ops must be a list of strings"
        if not isinstance(entry.get("error"), (str, type(None))):
            return f"{where}.error must be a string or null"
        # Other keys (convert's "status", "runtime", the nested "check" and "vs_ai_edge_litert"
        # records) are shown only as JSON; their strings are vetted with the rest of the card.
        if not isinstance(entry.get("status", ""), str):
            return f"{where}.status must be a string"
    return None


def _unsafe_string(tree: Any) -> str | None:
    """The first string (key or value) in ``tree`` that is too long or holds an unsafe character."""
    stack = [tree]
    while stack:  # iterative: a deeply nested card cannot exhaust the stack
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, str):
            if len(node) > MAX_STRING_CHARS:
                return f"string of {len(node)} characters is over the {MAX_STRING_CHARS}-character limit"
            if (not node.isprintable() and any(is_unsafe_char(ch) for ch in node)) or not BIDI_CONTROLS.isdisjoint(node):
                return f"string {printable(node)[:80]!r} holds a control character, surrogate or bidi control"
    return None

