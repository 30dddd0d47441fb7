"""Which TFLite interpreter runs here, its version, what its load errors say is missing, and the
process-wide malloc tuning the device commands apply.

The interpreter is LiteRT's (``ai_edge_litert``), falling back to ``tflite_runtime`` (the older
package many Raspberry Pi users still run).
"""

from __future__ import annotations

import os

from edge.errors import ModelError, first_line

RUNTIME_ENV = "POLYHEAD_RUNTIME"
"""Set to ``tflite-runtime`` or ``ai-edge-litert`` to force one interpreter package."""

_RUNTIMES = (
    ("ai-edge-litert", "ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite-runtime", "tflite_runtime.interpreter", "tflite_runtime"),
)


def load_interpreter_class(prefer: str | None = None) -> tuple[type, str, str]:
    """The TFLite ``Interpreter`` class, its package name and version.

    ``prefer`` (or the ``POLYHEAD_RUNTIME`` environment variable) picks a package; otherwise
    ai-edge-litert, then tflite-runtime.
    """
    import importlib

    prefer = prefer or os.environ.get(RUNTIME_ENV) or None
    candidates = [r for r in _RUNTIMES if prefer in (None, r[0])]
    if not candidates:
        raise ModelError(f"unknown runtime. Received: {prefer!r}; known: {[r[0] for r in _RUNTIMES]}")
    errors = []
    for name, module, package in candidates:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            errors.append(f"{module}: {first_line(e)}")
            continue
        version = getattr(importlib.import_module(package), "__version__", "") or dist_version(name)
        return mod.Interpreter, name, version
    raise ModelError(
        "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime==2.14.0 with numpy<2 on "
        f"Python <= 3.11). Tried: {'; '.join(errors)}"
    )


def runtime_of(cls: type) -> tuple[str, str]:
    """The package name and version of an ``Interpreter`` class from ``load_interpreter_class``
    (("", "") for any other class, e.g. a subclass that picks other kernels)."""
    import sys

    for name, module, package in _RUNTIMES:
        if cls.__module__ == module:
            return name, getattr(sys.modules.get(package), "__version__", "") or dist_version(name)
    return "", ""


def dist_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or "" if it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def missing_ops(message: str) -> list[str]:
    """Ops an interpreter's load error says it lacks, e.g. ``['FULLY_CONNECTED v12']``."""
    import re

    found = [f"{op} v{v}" for op, v in re.findall(r"builtin opcode '(\w+)' version '(\d+)'", message)]
    found += [f"custom {op}" for op in re.findall(r"unresolved custom op: (\w+)", message)]
    return sorted(set(found))


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Ask glibc for at most ``arenas`` malloc arenas (``MALLOC_ARENA_MAX``, at run time) and a fixed
    128 kB mmap threshold.

    By default every thread that allocates gets its own arena, so the prefetch thread's image
    buffers sit in a second heap: about 2 MB more resident memory on a device for no speed gain.
    Process-wide; the CLI's predict and bench call it. Returns False where it does not apply."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        ok = bool(libc.mallopt(-8, int(arenas)))  # -8 is M_ARENA_MAX in glibc's malloc.h
        # -3 is M_MMAP_THRESHOLD: image-sized buffers (>= 128 kB) get their own mapping and go back
        # to the system when freed, instead of glibc raising the threshold and keeping them in the heap.
        return bool(libc.mallopt(-3, 128 * 1024)) and ok
    except (OSError, AttributeError):
        return False  # not glibc (e.g. musl): nothing to tune
