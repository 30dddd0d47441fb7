"""bench.json for people and spreadsheets: one CSV row per variant, and the terminal table
``polyhead-edge bench`` prints (per-variant p50s, then the ratios with their intervals)."""

from __future__ import annotations

from typing import Any

from edge.bench.stats import bench_ratios, ratio_lines


def csv_rows(bench: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per variant (nested stats as ``interpreter_ms_p50`` etc.) and the header."""
    rows = []
    for vid, rec in bench["variants"].items():
        row: dict[str, Any] = {"variant_id": vid}
        for key, value in rec.items():
            if key == "rounds":
                row["rounds_ok"] = sum(1 for r in value if not r.get("error"))
            elif key == "accuracy":
                acc = value or {}
                for h, v in (acc.get("heads") or {}).items():
                    row[f"accuracy_{h}"] = v
                row["accuracy_joint"] = acc.get("joint")
                row["accuracy_n"] = acc.get("n")
            elif isinstance(value, dict):
                row.update({f"{key}_{k}": v for k, v in value.items()})
            elif isinstance(value, list):
                row[key] = ";".join(map(str, value))
            else:
                row[key] = value
        for key in ("board", "machine", "governor", "runtime", "runtime_version", "busy"):
            row[key] = bench.get(key)
        rows.append(row)
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    return header, rows


def to_csv(bench: dict[str, Any]) -> str:
    """bench.json as CSV, one row per variant."""
    import csv
    import io

    header, rows = csv_rows(bench)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(bench: dict[str, Any]) -> str:
    """A readable per-variant table (latencies are p50 per image, ms), then the ratios with intervals."""
    cols = ("variant", "files", "MB", "load ms", "first ms", "interp p50", "decode p50", "f2l p50", "img/s",
            "RSS MB", "py ovh %", "joint acc", "errors")
    lines = []
    for vid, r in bench["variants"].items():
        acc = r.get("accuracy") or {}
        lines.append((vid, str(len(r.get("files") or [])),
                      _fmt(r["bytes"] / 1e6 if r.get("bytes") else None, 3), _fmt(r.get("load_ms"), 1),
                      _fmt(r.get("first_inference_ms"), 1), _fmt((r.get("interpreter_ms") or {}).get("p50"), 3),
                      _fmt((r.get("decode_ms") or {}).get("p50"), 3),
                      _fmt((r.get("file_to_labels_ms") or {}).get("p50"), 3), _fmt(r.get("images_per_s"), 1),
                      _fmt(r.get("peak_rss_mb"), 1), _fmt(r.get("python_overhead_pct"), 1),
                      _fmt(acc.get("joint"), 3), _fmt(r.get("errors")) + (" (failed)" if r.get("error") else "")))
    widths = [max(len(c), *(len(row[i]) for row in lines)) if lines else len(c) for i, c in enumerate(cols)]
    out = [f"board: {bench['board']} ({bench.get('machine')}) | runtime: {bench['runtime']} "
           f"{bench['runtime_version']} | threads: {bench['threads']} | governor: {bench['governor']} | "
           f"rounds: {bench.get('rounds')} x >= {bench.get('min_time_s')} s | load: {bench.get('load_average_start')}"]
    out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in lines]
    for vid, r in bench["variants"].items():
        if r.get("error"):
            out.append(f"{vid}: {r['error']}")
        elif r.get("failed_rounds"):
            first = next(x["error"] for x in r["rounds"] if x.get("error"))
            out.append(f"{vid}: {r['failed_rounds']} of {len(r['rounds'])} rounds failed (the others kept): {first}")
    ratios = bench_ratios(bench)
    if ratios:
        out += ["", "ratio (p50, paired by round) value [95 % bootstrap interval over rounds]:"]
        out += ratio_lines(ratios)
    out += [f"warning: {w}" for w in bench.get("warnings", [])]
    return "\n".join(out)
