"""The Debian packages the tests need on the host: one list, each with its reason, installed when missing.

``make test`` depends on ``make setup-system``, which installs every package below that is not
installed yet (``apt-get install --no-install-recommends``, after ``apt-get update``). Because of
``--no-install-recommends``, a package a tool only *recommends* is dropped unless it is listed here
by name (arch-test for mmdebstrap was the gap: issue 21). Not root: it says so and changes nothing.

Before a tool is used, ``missing_tool`` names the first one absent and the package that provides it,
so a gap is one line saying what to install.

CLI (the Makefile calls these):
    python tests/system_packages.py install [GROUP...]   # all groups when none is given
    python tests/system_packages.py missing [GROUP...]   # prints the first missing tool, or nothing
    python tests/system_packages.py list                 # the table: package, groups, reason
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemPackage:
    """One Debian package the tests need: the commands it provides (checked before use) and why."""

    name: str
    tools: tuple[str, ...]  # executables on PATH (or in /usr/sbin) that prove it is there; none for a library
    groups: tuple[str, ...]  # who needs it: "pi" (make test-pi), "video" (live-video tests), "fresh" (make test-fresh)
    reason: str


PACKAGES = (
    SystemPackage("mmdebstrap", ("mmdebstrap",), ("pi", "fresh"),
                  "builds the emulated Raspberry Pi OS roots (and test-fresh's clean amd64 root)"),
    SystemPackage("arch-test", ("arch-test",), ("pi",),
                  "mmdebstrap refuses a foreign-architecture root without it; only a Recommends of mmdebstrap"),
    SystemPackage("qemu-user-static", ("qemu-aarch64-static", "qemu-arm-static"), ("pi",),
                  "runs the arm64 and armhf roots' binaries on this CPU"),
    SystemPackage("binfmt-support", ("update-binfmts",), ("pi",),
                  "registers qemu with the kernel's binfmt_misc (make setup-pi enables the entries)"),
    SystemPackage("rsync", ("rsync",), ("pi",),
                  "docs/raspberry-pi.md's pi:copy block copies the package to the Pi with rsync"),
    SystemPackage("libegl1", (), ("mediapipe",),
                  "MediaPipe Tasks loads libEGL.so.1 even on the CPU (make test's MediaPipe tests)"),
    SystemPackage("libgles2", (), ("mediapipe",),
                  "MediaPipe Tasks' libmediapipe.so links libGLESv2.so.2 even on the CPU (found by make test-fresh)"),
    SystemPackage("ffmpeg", ("ffmpeg", "ffprobe"), ("video",),
                  "the live-video tests encode and read test clips and streams"),
    SystemPackage("chromium", ("chromium",), ("video",),
                  "the live-video page is tested in a headless browser"),
)
GROUPS = ("pi", "mediapipe", "video", "fresh")
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


class SystemPackageError(RuntimeError):
    """An install step failed; the message is one line naming the command."""


def packages(groups: Iterable[str] | None = None) -> tuple[SystemPackage, ...]:
    """The packages of ``groups`` (every package when None), in list order; an unknown group is an error."""
    if groups is None:
        return PACKAGES
    groups = tuple(groups)
    for g in groups:
        if g not in GROUPS:
            raise SystemPackageError(f"unknown group '{g}' (known: {', '.join(GROUPS)})")
    return tuple(p for p in PACKAGES if set(p.groups) & set(groups))


def which(tool: str) -> str | None:
    """``shutil.which`` that also looks in the sbin directories (a non-root PATH lacks them)."""
    return shutil.which(tool) or shutil.which(tool, path=_SBIN)


def missing_tool(groups: Iterable[str] | None = None, setup: str = "make setup-system") -> str | None:
    """One line naming the first absent tool of ``groups``, its package and why it is needed, or None.

    ``setup`` is the make target that installs it (what the line tells the user to run)."""
    for pkg in packages(groups):
        for tool in pkg.tools:
            if which(tool) is None:  # the module's ``which``, looked up at call time (tests replace it)
                return f"{tool} is not installed: {setup} installs {pkg.name} ({pkg.reason})"
    return None


def installed(name: str) -> bool:
    """Whether dpkg has ``name`` installed."""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return proc.stdout.strip() == "install ok installed"


def apt_install_cmd(names: Iterable[str]) -> list[str]:
    """The apt-get command line that installs ``names`` and nothing they only recommend."""
    return ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *names]


def _run(cmd: list[str], what: str, timeout: float = 1800) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise SystemPackageError(f"{what}: timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise SystemPackageError(f"{what}: {cmd[0]}: {e.strerror}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise SystemPackageError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")


def install(groups: Iterable[str] | None = None, label: str = "setup-system") -> str:
    """Install the packages of ``groups`` that dpkg does not have; return what was done, one line.

    Not root: changes nothing and says so (the tests that need a missing tool then say which)."""
    wanted = packages(groups)
    missing = [p.name for p in wanted if not installed(p.name)]
    if not missing:
        return f"{label}: {' '.join(p.name for p in wanted)} already installed"
    if os.geteuid() != 0:
        return f"{label}: not root, nothing installed; missing: {' '.join(missing)}"
    _run(["apt-get", "update", "-qq"], "apt-get update")
    _run(apt_install_cmd(missing), f"apt-get install {' '.join(missing)}")
    return f"{label}: installed {' '.join(missing)}"


def main(argv: list[str]) -> int:
    cmd, groups = (argv[0] if argv else ""), (argv[1:] or None)
    try:
        if cmd == "install":
            print(install(groups))
        elif cmd == "missing":
            print(missing_tool(groups) or "")
        elif cmd == "list":
            for p in packages(groups):
                print(f"{p.name:18} {','.join(p.groups):10} {p.reason}")
        else:
            print(__doc__.split("CLI")[1].strip(), file=sys.stderr)
            return 2
    except SystemPackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
