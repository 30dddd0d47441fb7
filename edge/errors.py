"""One error contract for the edge: every known failure is a ``PolyheadError`` whose message is one
line naming the file or value and the problem. The CLIs catch this one class and print the message;
anything else is a bug and keeps its traceback."""

from __future__ import annotations


class PolyheadError(ValueError):
    """A known failure with a one-line message (newlines in the message are folded to spaces)."""

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split("\n")) if "\n" in text else text


class ModelError(PolyheadError):
    """A .tflite file cannot be loaded or run by the interpreter (one line naming the file)."""


def first_line(e: BaseException, limit: int | None = 300) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` chars
    (None: the whole line). The project's one copy of this idiom."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
