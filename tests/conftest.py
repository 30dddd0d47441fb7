"""Shared test fixtures. Tests make their own tiny data; nothing is downloaded."""

from __future__ import annotations

import os

# Keep TensorFlow quiet and on the CPU in tests; the suite must pass on 2 cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def pytest_report_header(config) -> list[str]:
    """Say up front which environment-bound checks this run can make, so none is skipped silently."""
    import shutil
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here), str(here / "pi")]
    from browser import chromium_path
    from env_checks import legacy_missing_reason
    from piroot import host_problem

    legacy = legacy_missing_reason()
    pi = host_problem()
    chromium = chromium_path()
    return [
        "tflite-runtime 2.14 checks: " + (f"SKIPPED, {legacy}" if legacy else "on (.venv-legacy)"),
        "live checks through ffmpeg: " + ("on" if shutil.which("ffmpeg") else "SKIPPED, no ffmpeg (apt-get install -y ffmpeg)"),
        "emulated Raspberry Pi checks (tests/pi): " + (f"SKIPPED, {pi}" if pi else "available"),
        "live page in a browser: " + (f"on ({chromium})" if chromium else "SKIPPED, chromium is not installed"),
    ]
