"""Can a given TFLite runtime load a model? (A newer converter can emit op versions an older
runtime lacks: TF 2.21 files on tflite-runtime 2.14, the last release for Raspberry Pi OS's
Python 3.11.)

``probe(path)`` answers for the runtime of *this* Python; ``check_runtime_compat(path)`` asks
another Python (by default the repository's ``.venv-legacy``, tflite-runtime 2.14) in a
subprocess, so the host never imports two runtimes at once. ``python -m edge.compat FILE...``
prints the probe of each file as JSON lines (that is what the subprocess runs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

LEGACY_PYTHON_ENV = "POLYHEAD_LEGACY_PYTHON"


def probe(path: str | os.PathLike, runtime: str | None = None) -> dict[str, Any]:
    """Load ``path`` with this Python's interpreter and run its signature once on zeros.

    Returns ``{"runtime", "version", "loads": bool, "missing_ops": ["FULLY_CONNECTED v12", ...],
    "error": str | None}``. The card is not consulted: this is about the flatbuffer alone.
    """
    import numpy as np

    from edge.interpreter import load_interpreter_class, missing_ops

    cls, name, version = load_interpreter_class(runtime)
    result: dict[str, Any] = {"runtime": name, "version": version, "loads": False, "missing_ops": [], "error": None}
    try:
        interpreter = cls(model_path=str(path))
        interpreter.allocate_tensors()
        signatures = interpreter.get_signature_list()
        for key in signatures:
            runner = interpreter.get_signature_runner(key)
            feeds = {k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()}
            runner(**feeds)
        result["loads"] = True
    except Exception as e:
        message = str(e).strip()
        result["missing_ops"] = missing_ops(message)
        result["error"] = (message.splitlines()[0] if message else type(e).__name__)[:300]
    return result


def legacy_python() -> str | None:
    """The older runtime's Python: ``$POLYHEAD_LEGACY_PYTHON``, else ``<repo>/.venv-legacy/bin/python``."""
    given = os.environ.get(LEGACY_PYTHON_ENV)
    if given:
        return given
    candidate = Path(__file__).resolve().parents[1] / ".venv-legacy" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


def check_runtime_compat(path: str | os.PathLike, python: str | None = None,
                         timeout_s: float = 120) -> dict[str, dict[str, Any]]:
    """What another runtime makes of the model at ``path``, keyed ``"<runtime> <version>"``.

    ``python`` is an interpreter with that runtime and this repository importable (default:
    ``legacy_python()``). The value is ``{"loads": bool|None, "missing_ops": [...], "error": str|None}``,
    ready for ``ModelCard.runtime_compat``. ``loads`` is None when the check itself could not run.
    """
    python = python or legacy_python()
    if not python:
        return {"tflite-runtime": {"loads": None, "missing_ops": [], "error": "no legacy Python found "
                                   f"(make setup-legacy, or set {LEGACY_PYTHON_ENV})"}}
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = None
    try:
        proc = subprocess.run([python, "-m", "edge.compat", str(Path(path).resolve())], capture_output=True,
                              text=True, timeout=timeout_s, env=env, cwd=root)
        record = json.loads(proc.stdout.strip().splitlines()[-1])
    except OSError as e:
        return {"tflite-runtime": {"loads": None, "missing_ops": [], "error": f"cannot run {python}: {e.strerror or e}"}}
    except subprocess.TimeoutExpired:
        return {"tflite-runtime": {"loads": None, "missing_ops": [], "error": f"check timed out after {timeout_s:g} s"}}
    except (IndexError, json.JSONDecodeError):
        # No JSON: the runtime crashed on the model (a native abort counts as not loading).
        tail = [ln for ln in (proc.stderr if proc is not None else "").splitlines() if ln.strip()]
        return {"tflite-runtime": {"loads": False, "missing_ops": [],
                                   "error": (tail[-1] if tail else "the runtime process failed")[:300]}}
    key = f"{record.pop('runtime')} {record.pop('version')}".strip()
    return {key: record}


def _main(argv: list[str]) -> int:
    for path in argv:
        print(json.dumps(probe(path)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
