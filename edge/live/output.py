"""How ``polyhead-edge live`` prints records: JSON lines (one object per line, flushed per line), or
a table: on a terminal one status line rewritten in place with events on lines of their own, else
one line per result."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from edge.text import encodable, printable


def _heads_text(record: dict[str, Any]) -> str:
    cells = []
    for head, r in record["heads"].items():
        label, score = r["smoothed"][0]
        raw_label, raw_score = r["raw"][0]
        cell = f"{head}: {label} {score:.2f}"
        if raw_label != label:
            cell += f" (now {raw_label} {raw_score:.2f})"
        cells.append(cell)
    return "  |  ".join(cells)


def status_text(record: dict[str, Any]) -> str:
    """One result as a short human line."""
    return (f"#{record['seq']}  {record['fps']:5.1f} fps  age {record['age_ms']:6.1f} ms  "
            f"dropped {record['dropped']}  corrupt {record['corrupt']}  |  {_heads_text(record)}")


def event_text(record: dict[str, Any]) -> str:
    """One event as a short human line."""
    kind = record["event"]
    if kind == "change":
        what = "nothing" if record["label"] is None else f"{record['label']} ({record['score']:.2f})"
        return f"[{kind}] {record['head']}: {what} (was {record['previous'] or 'nothing'})"
    if kind == "end":
        tail = f": {record['error']}" if record.get("error") else (f" ({record['reason']})" if record.get("reason") else "")
        return (f"[end] {record['frames']} frames, {record['results']} results, {record['dropped']} dropped, "
                f"{record['corrupt']} corrupt{tail}")
    return f"[{kind}]" + (f" {record['reason']}" if record.get("reason") else "")


class Printer:
    """Writes records to ``stream`` as ``fmt`` (``jsonl`` or ``table``)."""

    def __init__(self, fmt: str, stream: TextIO | None = None):
        self.fmt = fmt
        self.stream = stream or sys.stdout
        self.tty = fmt == "table" and self.stream.isatty()
        self._status_shown = False
        self._encoding = getattr(self.stream, "encoding", None)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def __call__(self, record: dict[str, Any]) -> None:
        if self.fmt == "jsonl":
            self._write(json.dumps(record) + "\n")
            return
        is_event = "event" in record
        text = encodable(printable(event_text(record) if is_event else status_text(record)), self._encoding)
        if not self.tty:
            self._write(text + "\n")
        elif is_event:
            self._write(("\r\x1b[K" if self._status_shown else "") + text + "\n")
            self._status_shown = False
        else:
            self._write("\r\x1b[K" + text)
            self._status_shown = True

    def close(self) -> None:
        if self._status_shown:
            self._write("\n")
            self._status_shown = False
