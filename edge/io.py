"""Atomic file writes: an artifact is either the old file, the new file, or absent; never half."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.errors import PolyheadError


class JsonFileError(PolyheadError):
    """A JSON file is missing, unreadable or not an object (one line naming the file)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    import tempfile  # lazily: the device only writes at the end of a benchmark (memory is measured)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the permissions a plain open() would (umask applied),
        # so a deployment folder copied to a device is readable by its users.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    import json

    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | os.PathLike, what: str = "") -> dict[str, Any]:
    """The JSON object in ``path`` (UTF-8): the project's one JSON-file reader. Missing, unreadable or
    not an object is a one-line ``JsonFileError``; each caller decides what that failure means to it
    (an error, "not measured", "not done yet"). ``what`` says what the file is, for the missing case."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JsonFileError(f"{path}: missing" + (f" ({what})" if what else "")) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JsonFileError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(data, dict):
        raise JsonFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (the host's one file hash: checkpoints,
    converted models, images to deduplicate)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_errors(record: Mapping[str, Any], kind: type, where: str = "") -> list[str]:
    """One line per key of ``record`` missing from, or unknown to, the TypedDict ``kind`` (one level)."""
    required, optional = kind.__required_keys__, kind.__optional_keys__  # type: ignore[attr-defined]
    missing = sorted(required - set(record))
    unknown = sorted(set(record) - required - optional)
    name = where or kind.__name__
    return [f"{name}: missing key '{k}'" for k in missing] + [f"{name}: unknown key '{k}'" for k in unknown]
