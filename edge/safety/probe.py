"""Load a model and run it once, in a child process with a time and a memory limit.

What no static check can foresee (a kernel that crashes or spins on a shape it was never built for)
must not take the caller down: ``info`` asks a child, and a signal, a timeout or a memory limit is
then a one-line verdict about the file. ``python -m edge.safety.probe FILE`` is the child's side: it loads
the file as the device does (card checked against the signature, the model check first), runs one
trial invoke, and prints one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import first_line
from edge.safety.modelcheck import DEFAULT_LIMITS, ModelLimits


@dataclass(frozen=True)
class ProbeLimits:
    """The child's limits: wall time, address space (RLIMIT_AS) and CPU seconds."""

    timeout_s: float = 30.0
    memory_mb: int = 2048
    cpu_s: int = 60


DEFAULT_PROBE = ProbeLimits()


def _limit_child(limits: ProbeLimits) -> None:
    """Runs in the child before exec: cap its address space and CPU time."""
    import resource

    mem = int(limits.memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def probe_in_child(path: str | os.PathLike, model_limits: ModelLimits = DEFAULT_LIMITS,
                   limits: ProbeLimits = DEFAULT_PROBE, python: str | None = None) -> dict[str, Any]:
    """What loading ``path`` and one trial invoke give, asked of a limited child process.

    Returns ``{"loads": bool, "error": str | None, "missing_ops": [...], "signature": {...}}``; a
    crash, a timeout or the memory limit is ``loads: False`` with the reason in ``error``.
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder holding edge/
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [python or sys.executable, "-m", "edge.safety.probe", os.fspath(path), str(model_limits.max_input_pixels),
            str(model_limits.max_arena_mb)]
    failed: dict[str, Any] = {"loads": False, "missing_ops": [], "signature": None}
    try:
        proc = subprocess.run(args, capture_output=True, timeout=limits.timeout_s, env=env, cwd=root,
                              preexec_fn=lambda: _limit_child(limits))
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"loading and one run did not finish within {limits.timeout_s:g} s"}
    except OSError as e:
        return {**failed, "error": f"cannot start the probe ({e.strerror or e})"}
    if proc.returncode < 0:
        what = _signal_name(-proc.returncode)
        why = " (CPU time limit)" if what == "SIGXCPU" else ""
        return {**failed, "error": f"the runtime crashed on this file ({what}{why})"}
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        record = json.loads(lines[-1])
        if not isinstance(record, dict) or "loads" not in record:
            raise ValueError("no record")
    except (IndexError, ValueError):
        err = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        memory = any("MemoryError" in ln or "std::bad_alloc" in ln for ln in err)
        reason = f"over the {limits.memory_mb} MB memory limit" if memory else (err[-1] if err else f"exit status {proc.returncode}")
        return {**failed, "error": f"the probe failed: {reason[:300]}"}
    return record


def probe_here(path: str, model_limits: ModelLimits) -> dict[str, Any]:
    """The child's side: load as the device does, one trial invoke, describe the signature."""
    from edge.errors import PolyheadError
    from edge.runtime.interpreter import missing_ops
    from edge.runtime.model import Model

    def details(d: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {k: {"shape": [int(x) for x in v["shape"]], "dtype": str(v["dtype"].__name__)} for k, v in d.items()}

    try:
        model = Model(path, limits=model_limits)
        h, w = model.input_size
        import numpy as np

        model.run(np.zeros((h, w, 3), np.uint8))
    except PolyheadError as e:
        return {"loads": False, "error": str(e), "missing_ops": missing_ops(str(e)), "signature": None}
    except Exception as e:  # noqa: BLE001 - the child reports anything as one line
        return {"loads": False, "error": f"{path}: {first_line(e)}", "missing_ops": [], "signature": None}
    return {"loads": True, "error": None, "missing_ops": [], "signature": {
        "name": model.card.signature, "inputs": details(model.runner.get_input_details()),
        "outputs": details(model.runner.get_output_details())}}


def _main(argv: list[str]) -> int:
    path, pixels, arena = argv[0], int(argv[1]), float(argv[2])
    print(json.dumps(probe_here(path, ModelLimits(pixels, arena))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
