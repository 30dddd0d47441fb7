"""The card archive: a model card and its label files, appended to a .tflite file as a zip.

The card (``edge.contract.card``) is JSON stored as the member ``metadata.json`` of a zip archive appended to
the flatbuffer (the interpreter ignores trailing bytes; ``zipfile`` finds the archive from the end,
as TFLite's own metadata packer does). The same archive holds the label files of the model's
standard TFLite Metadata (``convert.metadata``), one per output: every member is stored
uncompressed, because MediaPipe reads them in place and refuses compressed ones. The model is the
bytes before the archive's first member, and the card's ``model_sha256`` binds the card to them.

Reading validates: a missing card, two cards, a card over ``MAX_CARD_BYTES``, a member name that is
a path, a compressed label file, a label file over ``MAX_MEMBER_BYTES``, too many members, or a
model whose hash is not the card's are one-line ``CardError``s (the card's own fields are
``ModelCard.from_dict``'s). Only the card is ever read (never inflated beyond its limit); nothing is
extracted to disk. Files of the previous format (a deflated ``metadata.json`` alone) still load.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from edge.contract.card import MAX_CARD_BYTES, CardError, ModelCard
from edge.errors import first_line

CARD_MEMBER = "metadata.json"
MAX_MEMBER_BYTES = 1 << 20
"""Largest label file: a million bytes is tens of thousands of class names."""
MAX_MEMBERS = 1024
_SAFE_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _sha256():
    """A SHA-256 hasher. CPython's built-in one when present: ``hashlib`` loads OpenSSL, which
    costs ~3.5 MB of resident memory on a device that only ever hashes its own model files."""
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python <= 3.11
        except ImportError:
            from hashlib import sha256
    return sha256()


def _sha256_hex(data: bytes) -> str:
    h = _sha256()
    h.update(data)
    return h.hexdigest()


def strip_card(data: bytes) -> bytes:
    """The flatbuffer alone: ``data`` with an appended card archive removed (unchanged if none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            # After reading, header_offset is absolute: the first member starts where the model ends.
            offsets = [i.header_offset for i in zf.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return data
    return data[: min(offsets)] if offsets and 0 < min(offsets) < len(data) else data


def check_member_name(name: str) -> str:
    """``name`` if it is a plain file name fit for the card archive, else a one-line CardError.

    No directories, no ``..``, no leading dot, no drive or backslash: a member name is never a path."""
    if not isinstance(name, str) or not _SAFE_MEMBER.fullmatch(name) or ".." in name:
        raise CardError(f"archive member name must be a plain file name ([A-Za-z0-9._-], no '..'). Received: {name[:100]!r}")
    return name


def _archive_infos(zf: zipfile.ZipFile, name: str) -> tuple[zipfile.ZipInfo, list[zipfile.ZipInfo]]:
    """The card member and the other members of an open archive, every rule checked (nothing read)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CardError(f"{name}: card archive has {len(infos)} members, over the limit of {MAX_MEMBERS}")
    seen: set[str] = set()
    for info in infos:
        try:
            check_member_name(info.filename)
        except CardError as e:
            raise CardError(f"{name}: {e}") from None
        if info.filename.lower() in seen:
            what = "two model cards" if info.filename == CARD_MEMBER else "a duplicate member"
            raise CardError(f"{name}: card archive holds {what} ({info.filename!r})")
        seen.add(info.filename.lower())
    cards = [i for i in infos if i.filename == CARD_MEMBER]
    if not cards:
        raise CardError(f"{name}: no model card ('{CARD_MEMBER}' is not in the archive appended to the model). "
                        f"Received members: {[i.filename for i in infos][:5]}")
    card = cards[0]
    if card.file_size > MAX_CARD_BYTES or card.compress_size > MAX_CARD_BYTES:
        raise CardError(f"{name}: card is {card.file_size} bytes, over the {MAX_CARD_BYTES}-byte limit")
    others = [i for i in infos if i is not card]
    for info in others:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CardError(f"{name}: archive member {info.filename!r} is compressed; label files must be stored")
        if info.file_size > MAX_MEMBER_BYTES or info.compress_size != info.file_size:
            raise CardError(f"{name}: archive member {info.filename!r} is {info.file_size} bytes, "
                            f"over the {MAX_MEMBER_BYTES}-byte limit or inconsistent")
    return card, others


def read_members(data: bytes, name: str = "<bytes>") -> dict[str, bytes]:
    """The archive's members other than the card (label files), validated, in archive order; {} if
    there is no archive. Each is stored, so reading it inflates nothing."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # untrusted bytes: no archive means no members
        return {}
    with zf:
        _, others = _archive_infos(zf, name)
        try:
            return {i.filename: zf.read(i) for i in others}
        except Exception as e:  # a corrupt archive: CRC, truncated data...
            msg = first_line(e, 200)
            raise CardError(f"{name}: card archive is corrupt ({msg})") from None


def embed_card(tflite: bytes, card: ModelCard, files: Mapping[str, bytes] | None = None) -> bytes:
    """Return ``tflite`` with ``card`` and ``files`` appended as one stored zip archive.

    Any previous archive is removed first. ``files`` (member name -> bytes: the TFLite Metadata
    label files) follow the card; when None, the previous archive's label files are kept, so
    re-embedding a card never orphans the metadata that names them. ``model_sha256`` is the hash
    of the bytes before the archive.
    """
    if files is None:
        files = read_members(tflite)
    if CARD_MEMBER in files:
        raise CardError(f"'{CARD_MEMBER}' is the card's own member name; a label file cannot use it")
    for member, content in files.items():
        check_member_name(member)
        if len(content) > MAX_MEMBER_BYTES:
            raise CardError(f"archive member {member!r} is {len(content)} bytes, over the {MAX_MEMBER_BYTES}-byte limit")
    model = strip_card(tflite)
    card = replace(card, model_sha256=_sha256_hex(model))
    buf = io.BytesIO()
    buf.write(model)
    # Stored, not deflated: MediaPipe maps the members in place and refuses compressed ones.
    with zipfile.ZipFile(buf, mode="a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(CARD_MEMBER, card.to_json_bytes())
        for member, content in files.items():
            zf.writestr(member, content)
    return buf.getvalue()


def write_model(path: str | os.PathLike, tflite: bytes, card: ModelCard,
                files: Mapping[str, bytes] | None = None) -> Path:
    """Atomically write a .tflite file with its card (and label files, see ``embed_card``) embedded."""
    from edge.io import atomic_write_bytes

    return atomic_write_bytes(path, embed_card(tflite, card, files))


def _read_card_fp(fp: io.BufferedIOBase, name: str) -> ModelCard:
    """Card of the model file open as ``fp`` (seekable). Reads only the archive and hashes the model
    in chunks, so a large model is never held in memory twice."""
    raw, model_end = _card_member(fp, name)
    card = _parse_card(raw, name)
    if card.model_sha256 and _prefix_sha256(fp, model_end) != card.model_sha256:
        raise CardError(f"{name}: the model does not match its card (sha256 differs: tampered file or a card from another model)")
    return card


def _card_member(fp: io.BufferedIOBase, name: str) -> tuple[bytes, int]:
    """The card member's bytes (at most one over the limit) and where the model ends."""
    try:
        zf = zipfile.ZipFile(fp)
    except Exception:  # any failure to find an archive in untrusted bytes means: no card
        raise CardError(f"{name}: no model card (no metadata.json archive appended to the model)") from None
    with zf:
        info, others = _archive_infos(zf, name)
        # After reading, header_offset is absolute: the model ends where the first member starts.
        model_end = min(i.header_offset for i in (info, *others))
        try:
            with zf.open(info) as f:
                raw = f.read(MAX_CARD_BYTES + 1)
        except Exception as e:  # zlib.error, BadZipFile, NotImplementedError...: a corrupt archive
            msg = first_line(e, 200)
            raise CardError(f"{name}: card archive is corrupt ({msg})") from None
    return raw, model_end


def _parse_card(raw: bytes, name: str) -> ModelCard:
    """The card from its member's bytes: within the limit, JSON, a valid card."""
    if len(raw) > MAX_CARD_BYTES:
        raise CardError(f"{name}: card is over the {MAX_CARD_BYTES}-byte limit")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = first_line(e, 200)
        raise CardError(f"{name}: card is not valid JSON ({msg})") from None
    try:
        return ModelCard.from_dict(d)
    except CardError as e:
        raise CardError(f"{name}: {e}") from None


def _prefix_sha256(fp: io.BufferedIOBase, end: int) -> str:
    """SHA-256 (hex) of the first ``end`` bytes of ``fp``, read in 64 KiB chunks."""
    digest = _sha256()
    fp.seek(0)
    left = end
    while left > 0:
        chunk = fp.read(min(left, 1 << 16))
        if not chunk:
            break
        digest.update(chunk)
        left -= len(chunk)
    return digest.hexdigest()


def read_card_bytes(data: bytes, name: str = "<bytes>") -> ModelCard:
    """Parse and validate the card embedded in a model file's bytes."""
    return _read_card_fp(io.BytesIO(data), name)


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate the card of a .tflite file (reads the archive at the end, hashes the rest)."""
    try:
        with open(path, "rb") as fp:
            return _read_card_fp(fp, str(path))
    except OSError as e:
        raise CardError(f"{path}: cannot read ({e.strerror or e})") from None
