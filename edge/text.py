"""Text from untrusted sources (card strings, file names) made safe to print.

A card string or a file name can hold a newline (a forged output line), an escape sequence (a
terminal-title or colour escape), a bidi override (text that reads differently than it runs), a
lone surrogate (a file name that is not UTF-8, decoded by Python with surrogateescape) or a character
the output encoding lacks: each would corrupt, forge or crash the output. ``printable`` escapes them.
"""

from __future__ import annotations

import os
import unicodedata

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_unsafe_char(ch: str) -> bool:
    """A control character, a surrogate, a line or paragraph separator, or a bidi control."""
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in BIDI_CONTROLS


def printable(text: str | bytes | os.PathLike) -> str:
    """``text`` with every unsafe character escaped (``\\n``, ``\\x1b``, ``\\udc80`` -> ``\\x80``):
    one line of valid Unicode, unchanged when it was already safe. Bytes are decoded as UTF-8 with
    invalid bytes escaped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    elif not isinstance(text, str):
        text = os.fspath(text)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
    if text.isprintable():  # fast path: no Cc, Cs (or other non-printables) at all
        if not BIDI_CONTROLS.intersection(text):
            return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif is_unsafe_char(ch):
            out.append(ch.encode("unicode_escape").decode("ascii") if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def encodable(text: str, encoding: str | None) -> str:
    """``text`` with characters the output ``encoding`` lacks written as backslash escapes."""
    if not encoding or encoding.lower().replace("-", "") in ("utf8", "utf_8"):
        return text
    return text.encode(encoding, "backslashreplace").decode(encoding)
