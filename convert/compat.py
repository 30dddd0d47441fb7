"""Runtime compatibility: does a converted file load, and agree, in each TFLite runtime?

ai-edge-litert is checked in-process (the check itself runs through it). tflite-runtime 2.14, the
last release for Raspberry Pi OS's Python 3.11 with numpy < 2, is checked in its own virtual
environment (``.venv-legacy``, or ``POLYHEAD_LEGACY_PYTHON``) through ``convert.legacy_probe``:
every file is run there on the same images and its outputs compared with ai-edge-litert's. With no
such environment the result says "unchecked", never a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from convert.records import RuntimeCompat
from convert.runner import CHECK_BATCH

LEGACY_ENV = "POLYHEAD_LEGACY_PYTHON"
LEGACY_KEY = "tflite-runtime"
REPO_ROOT = Path(__file__).resolve().parents[1]


def legacy_python() -> Path | None:
    """The legacy environment's python: ``$POLYHEAD_LEGACY_PYTHON``, else the repository's
    ``.venv-legacy/bin/python``; None when that file does not exist.

    The host's one legacy lookup: the device package knows nothing of this repository's venvs.
    """
    given = os.environ.get(LEGACY_ENV)
    found = Path(given) if given else REPO_ROOT / ".venv-legacy" / "bin" / "python"
    return found if found.exists() else None


def unchecked(reason: str) -> RuntimeCompat:
    """The runtime_compat record of a tflite-runtime check that could not run, and why."""
    return RuntimeCompat(runtime=LEGACY_KEY, loads=None, status="unchecked", error=reason)


def compare_outputs(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Top-1 agreement (lowest over outputs) and largest absolute score difference."""
    agreement, diff = 1.0, 0.0
    for k, a in ours.items():
        b = theirs.get(k)
        if b is None or b.shape != a.shape:
            return {"agreement": 0.0, "max_prob_diff": None, "error": f"output '{k}' missing or misshaped"}
        if len(a):
            agreement = min(agreement, float(np.mean(a.argmax(-1) == b.argmax(-1))))
            diff = max(diff, float(np.max(np.abs(a - b))))
    return {"agreement": round(agreement, 6), "max_prob_diff": round(diff, 6)}


def run_legacy(files: list[Path], images: Any, timeout_s: float = 600) -> dict[Path, dict[str, Any]]:
    """Run each file in tflite-runtime 2.14 (``.venv-legacy``) on ``images`` (uint8, all files one size).

    ``images`` is an array or anything sliced like one (a ``CheckStream``): its pixels go to the
    probe through a pipe ``CHECK_BATCH`` rows at a time, so neither process holds the whole split.
    Per file: ``{"runtime", "loads", "missing_ops", "error", "status"}`` plus ``"outputs"`` (scores per
    card output key, dequantized) when it loaded; ``status`` is ``unchecked`` when the check could
    not run at all.
    """
    python = legacy_python()
    if python is None:
        return {f: unchecked(f"no legacy Python (make setup-legacy, or set {LEGACY_ENV})") for f in files}
    n, height, width = len(images), int(images.shape[1]), int(images.shape[2])
    with tempfile.TemporaryDirectory(prefix="polyhead-legacy-") as tmp:
        env = {**os.environ, "POLYHEAD_RUNTIME": LEGACY_KEY, "PYTHONPATH": str(REPO_ROOT)}
        cmd = [str(python), "-m", "convert.legacy_probe", str(n), str(height), str(width), tmp, *map(str, files)]
        log_path = Path(tmp) / "probe.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=log,
                                    stderr=subprocess.STDOUT)
            if not _feed(proc, images, timeout_s):
                return {f: unchecked(f"legacy probe timed out after {timeout_s:.0f} s") for f in files}
        result_path = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result_path.exists():
            tail = log_path.read_text().strip().splitlines()[-1:] or ["no output"]
            return {f: unchecked(f"legacy probe failed: {tail[0][:300]}") for f in files}
        result = json.loads(result_path.read_text())
        runtime = f"{result['runtime']} {result['runtime_version']}".strip()
        out: dict[Path, dict[str, Any]] = {}
        for f in files:
            r = result["files"].get(str(f), {"loads": False, "error": "not run"})
            entry: dict[str, Any] = {"runtime": runtime, "loads": bool(r.get("loads")),
                                     "missing_ops": r.get("missing_ops") or [], "error": r.get("error")}
            if entry["loads"] and r.get("outputs"):
                with np.load(Path(tmp) / r["outputs"]) as z:
                    entry["outputs"] = {k: z[k] for k in z.files}
            else:
                entry["loads"] = False
                entry["status"] = "fails"
            out[f] = entry
        return out


def _feed(proc: subprocess.Popen, images: Any, timeout_s: float) -> bool:
    """Write ``images``' pixels to the probe's stdin a batch at a time and wait for it; False if it
    ran past ``timeout_s`` (then it is killed). A probe that ends early just stops the writing."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout_s, kill)  # a stuck probe would otherwise block a write forever
    timer.start()
    try:
        with contextlib.suppress(BrokenPipeError):  # the probe stopped reading: its exit status says why
            with proc.stdin:  # type: ignore[union-attr]  # Popen(stdin=PIPE) has one
                for start in range(0, len(images), CHECK_BATCH):
                    proc.stdin.write(np.ascontiguousarray(images[start: start + CHECK_BATCH], np.uint8).tobytes())  # type: ignore[union-attr]
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    return not fired.is_set()
