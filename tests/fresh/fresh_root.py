"""`make test-fresh`: the README's two commands, as a newcomer runs them, in a clean Debian root.

A new machine is modelled as a Debian bookworm amd64 root built by mmdebstrap (``--variant=minbase``,
what Debian's container images are made of) holding only python3, python3-venv, make, git and
ca-certificates. The bare root is cached as a tarball under ``build/fresh/`` keyed by its recipe;
every run unpacks a clean copy of it, clones the local repository at REF into ``/root/polyhead``
and runs, as root inside the root, the README's commands in order (``make all``, then ``make test``
with CI=true), stopping at the first that fails.

Each command enters the root in a private mount namespace (``unshare --mount``) with the mounts of
``MOUNTS``; they vanish with the namespace, so a failed or killed run leaves no mount on the host.
binfmt_misc is the kernel's one instance: the Pi roots' qemu entries registered inside stay
registered on the host (as ``make setup-pi`` would leave them), which is not a mount.

Everything goes to ``build/fresh/<run>.log``; each command's wall time and exit status are printed
and logged. After a pass the root is removed; after a failure it is kept for inspection and removed
by the next run.

CLI (as root): python tests/fresh/fresh_root.py [--ref REF] [--keep]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import system_packages  # noqa: E402

WORK = REPO / "build" / "fresh"
SUITE = "bookworm"
ARCH = "amd64"
VARIANT = "minbase"
# What a new machine has before the README: the README's own "Needs Python 3.10+, make" plus git to
# clone and the CA certificates every Debian image ships.
INCLUDE = ("python3", "python3-venv", "make", "git", "ca-certificates")
# Bump when the build steps change in a way the mmdebstrap command does not show.
RECIPE_VERSION = "1"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_CA = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
ROOT_CA = "/etc/ssl/certs/ca-certificates.crt"
CLONE = "/root/polyhead"
README = REPO / "README.md"


class FreshError(RuntimeError):
    """A step of test-fresh failed; the message is one line saying which."""


@dataclass(frozen=True)
class Mount:
    """One mount inside the root: ``mount ARGS SOURCE ROOT/TARGET``."""

    source: str
    target: str  # path inside the root
    args: tuple[str, ...]
    why: str


def mounts(ca: str | None = HOST_CA) -> tuple[Mount, ...]:
    """The mounts a command in the root gets, in mount order (a file mount needs its file to exist)."""
    ms = [
        Mount("proc", "/proc", ("-t", "proc"), "a fresh /proc for the namespace"),
        Mount("binfmt_misc", "/proc/sys/fs/binfmt_misc", ("-t", "binfmt_misc"),
              "the kernel's binfmt_misc, so make setup-pi can register qemu for the nested Pi roots"),
        Mount("/sys", "/sys", ("--bind",), "sysfs (nested mmdebstrap and chroot)"),
        Mount("/dev", "/dev", ("--bind",), "devices (/dev/null, /dev/urandom)"),
        Mount("/dev/pts", "/dev/pts", ("--bind",), "ptys for apt and dpkg scripts"),
        Mount("/dev/shm", "/dev/shm", ("--bind",), "POSIX shared memory (multiprocessing, chromium)"),
        Mount("/etc/resolv.conf", "/etc/resolv.conf", ("--bind", "-o", "ro"), "DNS"),
        # Every installed machine has one; mmdebstrap writes none, and the chroot keeps the host's hostname.
        Mount("/etc/hosts", "/etc/hosts", ("--bind", "-o", "ro"), "localhost and this hostname"),
    ]
    if ca and Path(ca).is_file():
        # The image's trust store: a TLS-inspecting proxy's CA is in it, and pip needs it for PyPI.
        ms.append(Mount(ca, ROOT_CA, ("--bind", "-o", "ro"), "the host's CA bundle (pip through the proxy)"))
    return tuple(ms)


def mount_lines(root: Path, ms: tuple[Mount, ...]) -> list[str]:
    """Shell lines that make each mount inside ``root`` (run inside the private namespace)."""
    lines = []
    for m in ms:
        target = str(root) + m.target
        lines.append(shlex.join(["mount", *m.args, m.source, target]))
    return lines


def root_env(ci: bool) -> dict[str, str]:
    """The environment of a command in the root: a root login's, plus the host's proxy settings."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8", "SHELL": "/bin/bash",
           "DEBIAN_FRONTEND": "noninteractive", "PIP_CERT": ROOT_CA}
    env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})
    if ci:
        env["CI"] = "true"
    return env


def enter_cmd(root: Path, command: str, env: dict[str, str], ms: tuple[Mount, ...]) -> list[str]:
    """The host command line that runs ``command`` in ``root`` (cwd the clone) in a private mount namespace."""
    inner = ["/usr/sbin/chroot", str(root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
             "/bin/bash", "-ec", f"cd {CLONE}\n{command}"]
    script = "\n".join(["set -e", *mount_lines(root, ms), "exec " + shlex.join(inner)])
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/bash", "-c", script]


def readme_commands(readme: Path = README) -> list[str]:
    """The commands of the README's first ``sh`` block (the two commands), comments removed."""
    m = re.search(r"^```sh\n(.*?)^```", readme.read_text(), re.S | re.M)
    if not m:
        raise FreshError(f"{readme}: no ```sh block with the commands")
    cmds = [ln.split("#")[0].strip() for ln in m.group(1).splitlines()]
    cmds = [c for c in cmds if c]
    if not cmds:
        raise FreshError(f"{readme}: the first ```sh block has no command")
    return cmds


def sources() -> list[str]:
    """mmdebstrap's MIRROR arguments: the host's deb822 sources file (the image's mirrors), else its default."""
    return [str(HOST_SOURCES)] if HOST_SOURCES.is_file() else []


def mmdebstrap_cmd(target: Path, srcs: list[str]) -> list[str]:
    return ["mmdebstrap", f"--variant={VARIANT}", f"--arch={ARCH}", "--format=tar",
            f"--include={','.join(INCLUDE)}", SUITE, str(target), *srcs]


def base_tar(srcs: list[str]) -> Path:
    """The cached bare root, named by the hash of its recipe (the command and the sources' text)."""
    text = f"fresh {RECIPE_VERSION}\n{shlex.join(mmdebstrap_cmd(Path('ROOT'), srcs))}\n"
    text += "".join(Path(s).read_text() for s in srcs if Path(s).is_file())
    return WORK / f"base-{SUITE}-{ARCH}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.tar"


class Log:
    """Lines to stdout and the log file; command output to the log file only (it is long)."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "a", buffering=1)

    def say(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] test-fresh: {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")

    def run(self, cmd: list[str], what: str, timeout: float | None = None) -> tuple[int, float]:
        """Run ``cmd`` with its output into the log; return (exit status, wall seconds) and say both."""
        self.say(f"{what}: start")
        self.f.write(f"$ {shlex.join(cmd)}\n")
        start = time.monotonic()
        try:
            rc = subprocess.run(cmd, stdout=self.f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
        wall = time.monotonic() - start
        self.say(f"{what}: rc {rc} in {_mmss(wall)}")
        return rc, wall


def _mmss(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:04.1f} s"


def _stale_runs(keep: Path) -> list[Path]:
    """Run folders under WORK that no live run holds (their lock is free), except ``keep``."""
    stale = []
    for p in sorted(WORK.glob("run-*")):
        if p == keep or not p.is_dir():
            continue
        try:
            with open(p / ".lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stale.append(p)
        except OSError:
            continue  # a run in progress holds it
    return stale


def _remove(path: Path) -> None:
    # Never follow a mount into the host: there are none (private namespaces), but be sure.
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def dpkg_packages(root: Path) -> set[str]:
    """The packages dpkg has installed in ``root``."""
    proc = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f=${Package}:${Status}\n"],
                          capture_output=True, text=True)
    return {ln.split(":")[0] for ln in proc.stdout.splitlines() if ln.endswith("install ok installed")}


def run(ref: str, keep: bool) -> int:
    if os.geteuid() != 0:
        print("test-fresh: needs root (mmdebstrap, chroot, mounts); nothing done", file=sys.stderr)
        return 2
    print(system_packages.install(["fresh"], label="test-fresh"))
    for tool in ("mmdebstrap", "unshare", "git", "tar"):
        if system_packages.which(tool) is None:
            raise FreshError(f"{tool} is not installed ({system_packages.missing_tool(['fresh']) or 'util-linux/git/tar'})")
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise FreshError(f"REF={ref}: not a commit of {REPO}")
    sha = proc.stdout.strip()
    WORK.mkdir(parents=True, exist_ok=True)
    name = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{sha[:10]}"
    rundir = WORK / name
    rundir.mkdir()
    lock = open(rundir / ".lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    log = Log(WORK / f"{name}.log")
    log.say(f"REF={ref} ({sha}); log {log.path}")
    for old in _stale_runs(rundir):
        log.say(f"removing {old.name} (an earlier run's root)")
        _remove(old)
    total = time.monotonic()

    srcs = sources()
    tar = base_tar(srcs)
    if tar.exists():
        log.say(f"bare root: cached {tar.name}")
    else:
        tmp = tar.with_name(f".{tar.name}.{os.getpid()}")
        # In its own mount namespace: mmdebstrap's mounts during the build cannot outlive it either.
        rc, _ = log.run(["unshare", "--mount", "--propagation", "private", "--", *mmdebstrap_cmd(tmp, srcs)],
                        f"mmdebstrap {VARIANT} {SUITE} {ARCH} + {','.join(INCLUDE)}")
        if rc != 0:
            tmp.unlink(missing_ok=True)
            log.say(f"FAIL: mmdebstrap (rc {rc}); see {log.path}")
            return 1
        os.replace(tmp, tar)
    root = rundir / "root"
    root.mkdir()
    rc, _ = log.run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(tar)], "unpack a clean copy")
    if rc != 0:
        log.say(f"FAIL: unpacking {tar.name} (rc {rc})")
        return 1
    before = dpkg_packages(root)
    (root / "etc" / "resolv.conf").unlink(missing_ok=True)
    (root / "etc" / "resolv.conf").touch()
    (root / "etc" / "hosts").touch()
    clone = root / CLONE.lstrip("/")
    rc, _ = log.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], f"git clone {REPO}")
    if rc == 0:
        rc, _ = log.run(["git", "-C", str(clone), "checkout", "-q", "--detach", sha], f"checkout {sha[:10]}")
    if rc != 0:
        log.say("FAIL: clone")
        return 1
    ms = mounts()
    log.say("mounts in each command's private namespace: "
            + "; ".join(f"{m.source} -> {m.target} ({m.why})" for m in ms))

    commands = readme_commands(clone / "README.md")  # the README of REF, as the newcomer reads it
    log.say(f"the README's commands: {commands}")
    results = []
    for i, command in enumerate(commands):
        ci = i > 0  # the README's second command is the one CI runs: `CI=true make test`
        env = root_env(ci)
        label = ("CI=true " if ci else "") + command
        rc, wall = log.run(enter_cmd(root, command, env, ms), label)
        results.append((label, rc, wall))
        if rc != 0:
            break
    added = sorted(dpkg_packages(root) - before)
    log.say(f"apt packages the commands installed ({len(added)}): {' '.join(added) or 'none'}")
    for label, rc, wall in results:
        log.say(f"  {label}: rc {rc}, {_mmss(wall)}")
    log.say(f"total {_mmss(time.monotonic() - total)}; log {log.path}")
    ok = len(results) == len(commands) and all(rc == 0 for _, rc, _ in results)
    if ok and not keep:
        _remove(rundir)
        log.say("PASS (root removed)")
    elif ok:
        log.say(f"PASS (root kept: {root})")
    else:
        log.say(f"FAIL: `{results[-1][0]}` exited {results[-1][1]}; root kept for inspection: {root}")
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="the README's two commands in a clean Debian root")
    ap.add_argument("--ref", default="HEAD", help="the commit of this repository to clone (default HEAD)")
    ap.add_argument("--keep", action="store_true", help="keep the root after a pass")
    args = ap.parse_args(argv)
    try:
        return run(args.ref, args.keep)
    except FreshError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
