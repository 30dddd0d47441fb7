"""What ``polyhead-edge info`` shows: each file's card, whether it passes the model check, and
whether it loads and runs here, asked of a limited child process (never in this one, and never for
a file already refused), then the variants found. Every string from a card or a path is escaped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.contract import tflite_metadata
from edge.contract.approaches import APPROACH_SPECS
from edge.errors import PolyheadError
from edge.safety.modelcheck import DEFAULT_LIMITS, ModelLimits
from edge.safety.probe import DEFAULT_PROBE, ProbeLimits
from edge.text import printable


def _card_entry(card) -> dict[str, Any]:
    entry = dict(variant=card.variant, approach=card.approach, precision=card.precision,
                 heads={h: list(card.schema.head(h).classes) for h in card.heads},
                 outputs=card.outputs, input=card.to_dict()["input"], backbone=card.backbone,
                 converter_version=card.converter_version, tensorflow_version=card.tensorflow_version,
                 runtime_compat=card.runtime_compat)
    if APPROACH_SPECS[card.approach].joint_output:
        entry["combinations"] = card.schema.num_combinations
    return entry


def describe_file(f: Path, limits: ModelLimits = DEFAULT_LIMITS, probe: ProbeLimits = DEFAULT_PROBE,
                  trusted_key: Any = None) -> dict[str, Any]:
    """One file's entry: its card, the model check, and the verdict of a limited child on loading it."""
    from edge.contract.card_archive import read_card
    from edge.safety.modelcheck import check_model_file
    from edge.safety.probe import probe_in_child

    entry: dict[str, Any] = {"bytes": f.stat().st_size}
    try:
        if trusted_key is not None:
            from edge.safety.signing import verify

            verify(f, trusted_key)
        card = read_card(f)
    except PolyheadError as e:
        entry["error"] = printable(str(e))
        return entry
    entry.update(_card_entry(card))
    try:
        check_model_file(f, None, limits)
    except PolyheadError as e:
        entry.update(loads=False, error=printable(str(e)))  # refused: no interpreter ever sees it
        return entry
    entry["tflite_metadata"] = tflite_metadata.summary(f)  # bounds-checked reader, no interpreter
    result = probe_in_child(f, limits, probe)
    entry["loads"] = bool(result.get("loads"))
    if entry["loads"]:
        entry["signature"] = result["signature"]
    else:
        entry["error"] = printable(str(result.get("error")))
        entry["this_runtime"] = {"missing_ops": list(result.get("missing_ops") or [])}
    return entry


def describe(path: str | Path, limits: ModelLimits = DEFAULT_LIMITS, probe: ProbeLimits = DEFAULT_PROBE,
             trusted_key: Any = None) -> dict[str, Any]:
    """Everything ``info`` shows about a deployment, as a dict (each file, then the variants)."""
    from edge.runtime.variants import discover, tflite_files

    path = Path(path)
    out: dict[str, Any] = {"path": str(path), "files": {}, "variants": {}, "problems": []}
    for f in tflite_files(path):
        out["files"][printable(f.name)] = describe_file(f, limits, probe, trusted_key)
    problems: list[tuple[str, str]] = []
    for vid, v in discover(path, problems, trusted_key).items():
        out["variants"][vid] = {"approach": v.approach, "files": [printable(f.name) for f in v.files], "bytes": v.bytes,
                                "heads": list(v.heads)}
    out["problems"] = [{"file": printable(f), "error": printable(e)} for f, e in problems]
    return out


def _card_lines(e: dict[str, Any]) -> list[str]:
    lines = [f"  variant {e['variant']}.{e['precision']}  approach {e['approach']}  backbone {e['backbone']}"]
    for h, classes in e["heads"].items():
        shown = ", ".join(classes[:8]) + (f", ... ({len(classes)})" if len(classes) > 8 else "")
        lines.append(f"  head {h}: {len(classes)} classes [{shown}]")
    if "combinations" in e:
        lines.append(f"  joint output: {e['combinations']} combinations seen in training")
    i = e["input"]
    quant = f" scale {i['scale']:.6g} zero_point {i['zero_point']}" if i["dtype"] != "float32" else ""
    lines.append(f"  input '{i['name']}': {i['height']}x{i['width']}x{i['channels']} {i['dtype']}{quant} "
                 f"pixels {i['value_range'][0]:g}..{i['value_range'][1]:g}")
    lines.append("  outputs (card key -> signature output): " + ", ".join(f"{k} -> {v}" for k, v in e["outputs"].items()))
    lines.append(f"  made by: TensorFlow {e['tensorflow_version'] or '?'}, converter {e['converter_version'] or '?'}")
    if "tflite_metadata" in e:
        lines.append("  " + printable(tflite_metadata.format_summary(e["tflite_metadata"])))
    return lines


def _load_lines(e: dict[str, Any]) -> list[str]:
    lines = []
    if e.get("loads"):
        sig = e["signature"]
        lines.append(f"  loads here: yes; signature '{sig['name']}' outputs "
                     + ", ".join(f"{k} {v['shape']} {v['dtype']}" for k, v in sig["outputs"].items()))
    else:
        lines.append(f"  loads here: NO: {e.get('error')}")
        ops = (e.get("this_runtime") or {}).get("missing_ops")
        if ops:
            lines.append(f"  missing ops here: {', '.join(ops)}")
    for rt_name, r in (e.get("runtime_compat") or {}).items():
        verdict = {True: "loads", False: "does NOT load", None: "not checked"}.get(r.get("loads"), "?")
        extra = f" (missing: {', '.join(r['missing_ops'])})" if r.get("missing_ops") else ""
        lines.append(f"  {rt_name}: {verdict}{extra}")
    return lines


def format_info(d: dict[str, Any]) -> str:
    """``describe``'s dict as the text ``info`` prints, every line escaped (``edge.text.printable``)."""
    from edge.runtime.interpreter import load_interpreter_class

    lines = []
    try:
        _, rt, ver = load_interpreter_class()
        lines.append(f"runtime here: {rt} {ver}")
    except PolyheadError as e:
        lines.append(f"runtime here: none ({e})")
    for name, e in d["files"].items():
        lines.append(f"{name}  ({e['bytes']} bytes)")
        if "variant" not in e:
            lines.append(f"  error: {e['error']}")
            continue
        lines += _card_lines(e) + _load_lines(e)
    lines.append("variants:")
    for vid, v in d["variants"].items():
        lines.append(f"  {vid}: {len(v['files'])} file(s), {v['bytes']} bytes, heads {', '.join(v['heads'])}")
    for p in d["problems"]:
        lines.append(f"  unusable: {p['file']}: {p['error']}")
    return "\n".join(printable(line) for line in lines)
