"""Paths from untrusted places (the command line, a folder's contents, rows of a labels.csv).

Only regular files are ever opened: a FIFO would block ``open()`` forever, a device would stream
without end. Folder walks are iterative (1,100 nested folders must not exhaust the stack), do not
follow symlinked folders (no loops), and skip anything that is not a regular file. A path holding a
NUL byte or a symlink loop is a per-file error, never a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from edge.errors import PolyheadError
from edge.text import printable


class PathError(PolyheadError):
    """A path that cannot be used: missing, not a regular file, outside its folder, or unreadable."""


def regular_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable regular file (one line, the path escaped), or None if it is."""
    try:
        st = os.stat(path)
    except ValueError:  # "embedded null byte"
        return f"{printable(path)}: the path holds a NUL byte"
    except OSError as e:
        why = "a symlink loop" if e.errno == errno.ELOOP else (e.strerror or type(e).__name__)
        return f"{printable(path)}: cannot read ({why})"
    if not stat.S_ISREG(st.st_mode):
        return f"{printable(path)}: not a regular file"
    return None


def open_regular(path: str | os.PathLike, inside: str | os.PathLike | None = None):
    """Open ``path`` for binary reading only if it is a regular file (and, with ``inside``, only if
    its real path lies inside that folder). Raises ``PathError``; never blocks on a FIFO."""
    if inside is not None:
        real, folder = Path(os.path.realpath(path)), Path(os.path.realpath(inside))
        if folder not in real.parents:
            raise PathError(f"{printable(path)}: refused, it points outside {printable(inside)}")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below refuses it anyway.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except ValueError:
        raise PathError(f"{printable(path)}: the path holds a NUL byte") from None
    except OSError as e:
        raise PathError(f"{printable(path)}: cannot read ({e.strerror or type(e).__name__})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PathError(f"{printable(path)}: not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def walk_files(folder: str | os.PathLike, keep: Callable[[str], bool] = lambda name: True,
               max_depth: int = 4096) -> list[Path]:
    """Regular files under ``folder`` whose name passes ``keep``, sorted; iterative, not following
    symlinked folders. Symlinked files count when they resolve to a regular file."""
    found: list[Path] = []
    pending = [(os.fspath(folder), 0)]
    while pending:
        current, depth = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # unreadable folder: nothing listed from it
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < max_depth:
                        pending.append((entry.path, depth + 1))
                elif keep(entry.name) and entry.is_file(follow_symlinks=True):
                    found.append(Path(entry.path))
            except OSError:
                continue  # a symlink loop or a vanished entry: not a file
    return sorted(found)
