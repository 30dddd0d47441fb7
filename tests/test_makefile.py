"""The Makefile's variables reach the commands: `make -n VAR=value target` for every target that uses
VAR must print value in that target's command (issue 17); `make help` shows the values in force."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed here")

# Which variables each target's command must carry.
USES = {
    "all": ("DATA", "RUN", "BACKBONE", "IMAGE_SIZE", "EPOCHS", "BATCH_SIZE", "WEIGHTS", "PROTOCOL", "NUM_IMAGES",
            "SYNTH_SIZE", "HOLDOUT", "PRECISIONS", "THREADS", "RUNS", "SEED", "COMPOSE"),
    "data": ("DATA", "NUM_IMAGES", "SYNTH_SIZE", "HOLDOUT", "SEED"),
    "train": ("DATA", "BACKBONE", "APPROACHES", "RUN", "IMAGE_SIZE", "EPOCHS", "BATCH_SIZE", "WEIGHTS", "PROTOCOL",
              "SEED", "COMPOSE"),
    "convert": ("RUN", "PRECISIONS"),
    "bench": ("RUN", "THREADS", "RUNS", "ROUNDS"),
    "report": ("RUN",),
    "paper": ("DATA", "PAPER_WEIGHTS", "EPOCHS", "NUM_IMAGES", "THREADS", "SEED"),
    "compare": ("SEED",),
    "compose": ("DATA", "NUM_IMAGES", "HOLDOUT", "EPOCHS", "IMAGE_SIZE"),
    "test": ("PYTEST_ARGS",),
    "test-fast": ("PYTEST_ARGS",),
    "test-pi": ("PYTEST_ARGS",),
    "setup": ("PY",),
    "setup-legacy": ("PY_LEGACY",),
    "setup-mediapipe": ("PY_MEDIAPIPE",),
}
# Variables no target passes on, and why.
UNUSED = {"PYTEST_ARGS": None}


def makefile_variables() -> list[str]:
    return re.findall(r"^([A-Z_]+) +\?=", MAKEFILE.read_text(), re.M)


def dry_run(*args: str, built: bool = True) -> str:
    """`make -n`; ``built``: with the environments treated as built, so only the target's own commands print."""
    old = ["-o", ".venv/.installed", "-o", ".venv-legacy/.installed", "-o", ".venv-mediapipe/.installed"] if built else []
    proc = subprocess.run(["make", "-n", *old, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_variable_is_in_the_table():
    used = {v for vs in USES.values() for v in vs}
    assert set(makefile_variables()) == used, set(makefile_variables()) ^ used


def _rows():
    for target, variables in USES.items():
        for var in variables:
            yield pytest.param(target, var, id=f"{target}-{var}")


@pytest.mark.parametrize("target, var", list(_rows()))
def test_variable_reaches_the_command(target, var):
    value = f"sentinel_{var.lower()}_7"
    args = [f"{var}={value}", target]
    if target in ("setup", "setup-legacy", "setup-mediapipe"):
        args = ["-W", "pyproject.toml", *args]  # the stamp's recipe prints only when it is out of date
    out = dry_run(*args, built=target not in ("setup", "setup-legacy", "setup-mediapipe"))
    commands = [ln for ln in out.splitlines() if value in ln]
    assert commands, f"make -n {' '.join(args)}: {value} is in no command:\n{out}"


def test_help_shows_the_values_in_force():
    out = subprocess.run(["make", "help", "EPOCHS=3", "RUN=runs/x"], cwd=REPO, capture_output=True, text=True,
                         timeout=60).stdout
    assert "  EPOCHS=3\n" in out and "  RUN=runs/x\n" in out
    assert "  SEED=0\n" in out  # an untouched variable shows its default
    shown = re.findall(r"^  ([A-Z_]+)=", out, re.M)
    assert shown == makefile_variables()
    for target in (*USES, "help", "lint", "clean", "setup-pi"):
        assert re.search(rf"^  make {re.escape(target)}\s", out, re.M), f"make help does not list {target}"


def test_test_targets_require_the_environment_tests():
    """`make test` turns the environment skips (legacy runtime, MediaPipe, emulated Pi) into failures."""
    out = dry_run("test")
    line = next(ln for ln in out.splitlines() if "pytest --ignore=tests/pi" in ln)
    assert all(f"POLYHEAD_REQUIRE_{env}=1" in line for env in ("LEGACY", "MEDIAPIPE", "PI"))
    pi = next(ln for ln in out.splitlines() if "pytest tests/pi" in ln)
    assert "POLYHEAD_REQUIRE_PI=1" in pi and "tests/pi/piroot.py setup-host" in out
