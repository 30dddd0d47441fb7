"""Raspberry Pi OS in a box: emulated Debian Bookworm roots (arm64, armhf) under qemu user mode.

The roots are built once with mmdebstrap and cached in ``build/pi-roots/<arch>-<key>``, where
``<key>`` hashes the recipe: the mmdebstrap command and the install commands of
docs/raspberry-pi.md. Change either and the root is rebuilt; nothing else triggers a rebuild.

The Pi user's commands come from docs/raspberry-pi.md, from its fenced blocks tagged
``sh pi:<name>``: the test runs exactly what the page shows (see ``doc_blocks``).

A build goes into ``build/pi-roots/.building-*`` and is renamed into place only when it is
complete, so a failed or interrupted build never looks like a cache; the next run removes it.
Every mount is undone in a ``finally`` (SIGTERM included); mounts left by a killed run are
undone before anything else touches the cache.

CLI (run as root; the Makefile calls these):
    python tests/pi/piroot.py setup-host   # apt-get install HOST_PACKAGES (tests/system_packages.py, group pi); binfmt_misc
    python tests/pi/piroot.py build [ARCH...]
    python tests/pi/piroot.py problem      # prints why the Pi tests cannot run here, or nothing
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

import system_packages  # noqa: E402  (the one list of the tests' Debian packages)

DOC = REPO / "docs" / "raspberry-pi.md"
CACHE_ENV = "POLYHEAD_PI_CACHE"
MIRROR_ENV = "POLYHEAD_PI_MIRROR"
REQUIRE_ENV = "POLYHEAD_REQUIRE_PI"
SUITE = "bookworm"
HOST_PACKAGES = tuple(p.name for p in system_packages.packages(["pi"]))
BINFMT = Path("/proc/sys/fs/binfmt_misc")
PI_UID = 1000
PI_HOME = "/home/pi"
HOST_CA = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
ROOT_CA = "/etc/ssl/host-ca-certificates.crt"
# Bump when the build steps below change in a way the recipe text does not show.
RECIPE_VERSION = "1"
# What every root gets besides the docs' apt packages: numpy's wheels need libstdc++6.
BASE_INCLUDE = ("python3", "python3-venv", "python3-pip", "ca-certificates", "libstdc++6")


class PiError(RuntimeError):
    """A step of building or running a root failed; the message is one line saying which."""


@dataclass(frozen=True)
class Arch:
    """One Debian architecture as Raspberry Pi OS ships it."""

    name: str  # Debian's name
    qemu: str  # binfmt entry and qemu binary suffix
    machine: str  # platform.machine() inside the root
    qemu_cpu: str  # QEMU_CPU: qemu's default `max` CPU computes int8 wrongly on aarch64
    cpuinfo: str  # a Raspberry Pi 4's /proc/cpuinfo for this userland


def _pi4_cpuinfo(core: str) -> str:
    cores = "".join(f"processor\t: {i}\n{core}\n" for i in range(4))
    return cores + "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


ARCHES = {
    "arm64": Arch("arm64", "aarch64", "aarch64", "cortex-a72", _pi4_cpuinfo(
        "BogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n")),
    # qemu-arm has no Cortex-A72; the A15 is the ARMv7 core with the same NEON/VFPv4/idiv features
    # that 32-bit Raspberry Pi OS builds for.
    "armhf": Arch("armhf", "arm", "armv7l", "cortex-a15", _pi4_cpuinfo(
        "model name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\nFeatures\t: half thumb fastmult vfp "
        "edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\nCPU implementer\t: 0x41\n"
        "CPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n")),
}


@dataclass(frozen=True)
class PiEnv:
    """One way a Pi user installs the edge package: an architecture and the docs block that installs it."""

    name: str
    arch: str
    install_block: str  # docs block name, e.g. "install-litert"
    runtime: str  # the interpreter package it must end up using


ENVS = (
    PiEnv("arm64-litert", "arm64", "install-litert", "ai-edge-litert"),
    PiEnv("arm64-tflite-runtime", "arm64", "install-tflite-runtime", "tflite-runtime"),
    PiEnv("armhf-tflite-runtime", "armhf", "install-armhf", "tflite-runtime"),
)


# -- the docs' commands ---------------------------------------------------------------------------

_BLOCK = re.compile(r"^```sh pi:([a-z0-9-]+)\n(.*?)^```", re.S | re.M)


def doc_blocks(doc: Path | None = None) -> dict[str, str]:
    """The ``sh pi:<name>`` fenced blocks of the docs page, by name (the commands the tests run)."""
    doc = doc or DOC
    try:
        text = doc.read_text()
    except OSError as e:
        raise PiError(f"{doc}: cannot read the deploy commands ({e.strerror})") from None
    blocks = {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}
    if not blocks:
        raise PiError(f"{doc}: no ```sh pi:<name> blocks")
    return blocks


def block(name: str, doc: Path | None = None) -> str:
    """One docs block by name; a missing one is a one-line error naming it."""
    doc = doc or DOC
    blocks = doc_blocks(doc)
    if name not in blocks:
        raise PiError(f"{doc}: no ```sh pi:{name} block (have: {', '.join(sorted(blocks))})")
    return blocks[name]


def apt_packages(text: str) -> tuple[str, ...]:
    """The packages of the ``sudo apt install -y ...`` lines of a block (mmdebstrap installs them)."""
    pkgs: list[str] = []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words[:3] == ["sudo", "apt", "install"]:
            pkgs += [w for w in words[3:] if not w.startswith("-")]
    return tuple(pkgs)


def shell_lines(text: str) -> str:
    """A block without its apt lines (those are the image's packages, installed by mmdebstrap)."""
    return "\n".join(line for line in text.splitlines() if not apt_packages(line)) + "\n"


# -- the host -------------------------------------------------------------------------------------


def debian_mirror(files: list[Path] | None = None) -> str:
    """The Debian mirror apt uses on this host (deb822 or one-line sources), else deb.debian.org.

    ``POLYHEAD_PI_MIRROR`` overrides it."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV].rstrip("/")
    if files is None:
        files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if f.suffix not in ("", ".list", ".sources") or not f.is_file():
            continue
        text = f.read_text(errors="replace")
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1).rstrip("/")
        for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
            return m.group(1).rstrip("/")
    return "http://deb.debian.org/debian"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO / "build" / "pi-roots")


def host_problem() -> str | None:
    """Why the emulated Pi cannot run on this machine (None: it can). Changes nothing."""
    if sys.platform != "linux":
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot and bind mounts); run `make test-pi` as root"
    missing = system_packages.missing_tool(["pi"], setup="make setup-pi")
    if missing:
        return missing
    for tool in ("chroot", "mount"):  # coreutils and mount: essential, but a container may lack them
        if system_packages.which(tool) is None:
            return f"{tool} is not installed"
    for arch in ARCHES.values():
        entry = BINFMT / f"qemu-{arch.qemu}"
        if not BINFMT.joinpath("status").exists():
            return f"binfmt_misc is not mounted at {BINFMT} (make setup-pi mounts it)"
        if not entry.exists() or "enabled" not in entry.read_text():
            return f"binfmt entry {entry} is missing or disabled (make setup-pi: update-binfmts --enable qemu-{arch.qemu})"
    return None


def _run(cmd: list[str], what: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    """Run a host command; failure is a PiError naming ``what`` and the command's last output line."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise PiError(f"{what}: timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise PiError(f"{what}: {cmd[0]}: {e.strerror}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise PiError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return proc


def setup_host() -> str:
    """Install the host tools when missing (apt-get update first) and enable binfmt_misc for ARM.

    Returns what it did, one line. Not root: changes nothing and says so (the tests then skip, or
    fail under POLYHEAD_REQUIRE_PI=1)."""
    if os.geteuid() != 0:
        return "setup-pi: not root, nothing installed; the Pi tests will say why they cannot run"
    try:
        done = [system_packages.install(["pi"], label="setup-pi").removeprefix("setup-pi: ")]
    except system_packages.SystemPackageError as e:
        raise PiError(str(e)) from None
    if not BINFMT.joinpath("status").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], f"mount binfmt_misc on {BINFMT}")
        done.append("mounted binfmt_misc")
    for arch in ARCHES.values():
        entry = BINFMT / f"qemu-{arch.qemu}"
        if not entry.exists() or "enabled" not in entry.read_text():
            _run(["update-binfmts", "--enable", f"qemu-{arch.qemu}"], f"update-binfmts --enable qemu-{arch.qemu}")
            done.append(f"enabled qemu-{arch.qemu}")
    return "setup-pi: " + "; ".join(done)


# -- mounts ---------------------------------------------------------------------------------------


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mounts."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(set(points), key=len, reverse=True)


def unmount_all(path: Path) -> None:
    """Undo every mount below ``path``: first normally, then lazily; a mount that stays is an error."""
    for point in mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = mounts_under(path)
    if left:
        raise PiError(f"cannot unmount {left[0]}; unmount it by hand before removing {path}")


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts, and never crosses into another filesystem (a bind-mounted /dev)."""
    if not path.exists():
        return
    unmount_all(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    if path.exists():
        raise PiError(f"cannot remove {path}")


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while inside, so ``finally`` blocks unmount (main thread only)."""
    try:
        old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def mounted(root: Path, arch: Arch) -> Iterator[Path]:
    """/dev, /proc, /sys of the host, and a Raspberry Pi 4 /proc/cpuinfo, mounted in ``root``; always undone.

    LiteRT's CPU detection reads /proc/cpuinfo and segfaults on the host's x86 text."""
    cpuinfo = root / "etc" / "pi-cpuinfo"
    cpuinfo.write_text(arch.cpuinfo)
    # The host's trust store for pip (a network with a TLS-inspecting proxy adds its CA there), and DNS.
    if Path(HOST_CA).is_file():
        shutil.copyfile(HOST_CA, root / ROOT_CA.lstrip("/"))
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    steps = [
        (["mount", "--bind", "/dev", str(root / "dev")], root / "dev"),
        (["mount", "-t", "proc", "proc", str(root / "proc")], root / "proc"),
        (["mount", "--bind", str(cpuinfo), str(root / "proc" / "cpuinfo")], root / "proc" / "cpuinfo"),
        (["mount", "--bind", "/sys", str(root / "sys")], root / "sys"),
    ]
    with _sigterm_unwinds():
        try:
            for cmd, target in steps:
                _run(cmd, f"mount {target}")
            yield root
        finally:
            unmount_all(root)


def run_as_pi(root: Path, arch: Arch, script: str, timeout: float = 600,
              what: str = "command in the root") -> subprocess.CompletedProcess:
    """Run a bash script (``set -e``) inside a mounted root as the Pi user, in a login-like environment.

    Returns the finished process (the caller checks returncode); a timeout is a PiError."""
    env = {"HOME": PI_HOME, "USER": "pi", "LOGNAME": "pi", "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "QEMU_CPU": arch.qemu_cpu, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_DEFAULT_TIMEOUT": "60", "PIP_PROGRESS_BAR": "off"}
    if (root / ROOT_CA.lstrip("/")).is_file():
        env["PIP_CERT"] = ROOT_CA
    env.update({k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")})
    # The host's chroot by absolute path: ``env`` holds the Pi's PATH, which lacks /usr/sbin.
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    cmd = [chroot, f"--userspec={PI_UID}:{PI_UID}", str(root), "/bin/bash", "-ec", f"cd {PI_HOME}\n{script}"]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PiError(f"{what}: timed out after {timeout:.0f} s in {root.name}") from None
    except OSError as e:
        raise PiError(f"{what}: {chroot}: {e.strerror}") from None


# -- copy and install (the docs' commands) --------------------------------------------------------


def copy_to_pi(root: Path, models: Path | None = None) -> None:
    """Run the docs' ``pi:copy`` block on the host, with the Pi's home inside ``root`` as the target.

    Substitutions (the only ones): ``pi@raspberrypi.local:~/`` is ``<root>/home/pi/``, and
    ``runs/default/edge/`` is ``models`` (the test's .tflite files; without it that line is skipped)."""
    for line in block("copy").splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if "runs/default/edge/" in line:
            if models is None:
                continue
            line = line.replace("runs/default/edge/", f"{models}/")
        line = line.replace("pi@raspberrypi.local:~/", f"{root}{PI_HOME}/")
        _run(["bash", "-ec", line], f"copy to the Pi: {line}", cwd=REPO)
    subprocess.run(["chown", "-R", f"{PI_UID}:{PI_UID}", str(root / PI_HOME.lstrip("/"))], check=True)


def install(root: Path, arch: Arch, env: PiEnv) -> str:
    """Run the env's docs install block as the Pi user (``set -e``); returns its output."""
    script = shell_lines(block(env.install_block))
    proc = run_as_pi(root, arch, script, timeout=900, what=f"{env.name}: docs block pi:{env.install_block}")
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        lines = [ln for ln in lines if ln.startswith("ERROR")] or lines  # pip's own verdict, when there is one
        raise PiError(f"{env.name}: docs block pi:{env.install_block} failed in {root.name} "
                      f"(exit {proc.returncode}): {lines[-1] if lines else 'no output'}")
    return proc.stdout + proc.stderr


# -- build and cache ------------------------------------------------------------------------------


def mmdebstrap_cmd(arch: Arch, target: Path) -> list[str]:
    pkgs = list(BASE_INCLUDE)
    for env in ENVS:
        if env.arch == arch.name:
            pkgs += [p for p in apt_packages(block(env.install_block)) if p not in pkgs]
    return ["mmdebstrap", f"--arch={arch.name}", "--variant=essential", f"--include={','.join(pkgs)}",
            SUITE, str(target), debian_mirror()]


def recipe(arch: Arch) -> str:
    """Everything a root is made of, as text: its hash names the cached root."""
    parts = [f"recipe {RECIPE_VERSION}", " ".join(mmdebstrap_cmd(arch, Path("ROOT"))), arch.qemu_cpu]
    for env in ENVS:
        if env.arch == arch.name:
            parts += [f"[{env.name}]", block(env.install_block)]
    return "\n".join(parts) + "\n"


def base_path(arch: Arch) -> Path:
    """The bare mmdebstrap root (plus the Pi user), cached on its own so a failed install step
    does not cost the slow emulated bootstrap again."""
    text = f"base {RECIPE_VERSION}\n{' '.join(mmdebstrap_cmd(arch, Path('ROOT')))}\n"
    return cache_dir() / f"base-{arch.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def root_path(arch: Arch) -> Path:
    key = hashlib.sha256(recipe(arch).encode()).hexdigest()[:16]
    return cache_dir() / f"{arch.name}-{key}"


def _clean_stale(arch: Arch) -> list[str]:
    """Remove interrupted builds and roots of older recipes for ``arch``; return what was removed."""
    removed = []
    cache = cache_dir()
    if not cache.exists():
        return removed
    keep = (root_path(arch), base_path(arch))
    for p in cache.iterdir():
        stale_build = p.name.startswith(f".building-{arch.name}-")
        old_root = p.name.startswith((f"{arch.name}-", f"base-{arch.name}-")) and p not in keep
        if stale_build or old_root:
            remove_tree(p)
            removed.append(p.name)
    return removed


def build_root(arch: Arch, log=print) -> Path:
    """The cached root for ``arch``, built (about 3-4 min) if it is missing. One-line PiError on failure."""
    problem = host_problem()
    if problem:
        raise PiError(f"cannot build the {arch.name} root: {problem}")
    final = root_path(arch)
    for name in _clean_stale(arch):
        log(f"pi-roots: removed {name} (an interrupted build or an older recipe)")
    if (final / ".recipe").exists():
        unmount_all(final)  # a run killed with SIGKILL can leave its mounts
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    base = base_path(arch)
    if not (base / ".complete").exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".building-{arch.name}-", dir=final.parent))
        tmp.rmdir()  # mmdebstrap wants to create it
        try:
            with _sigterm_unwinds():
                log(f"pi-roots: building {base.name} (mmdebstrap {arch.name} {SUITE} from {debian_mirror()})")
                _run(mmdebstrap_cmd(arch, tmp), f"mmdebstrap {arch.name} {SUITE} from {debian_mirror()}",
                     timeout=1800)
                _prepare(tmp, arch)
                (tmp / ".complete").write_text(" ".join(mmdebstrap_cmd(arch, Path("ROOT"))) + "\n")
                os.replace(tmp, base)
        except BaseException:
            remove_tree(tmp)
            raise
    tmp = Path(tempfile.mkdtemp(prefix=f".building-{arch.name}-", dir=final.parent))
    tmp.rmdir()
    try:
        with _sigterm_unwinds():
            log(f"pi-roots: building {final.name} from {base.name}")
            _run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], f"copy {base.name}")
            copy_to_pi(tmp)
            with mounted(tmp, arch):
                for env in ENVS:
                    if env.arch == arch.name:
                        log(f"pi-roots: {env.name}: docs block pi:{env.install_block}")
                        install(tmp, arch, env)
            (tmp / ".recipe").write_text(recipe(arch))
            os.replace(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    return final


def _prepare(root: Path, arch: Arch) -> None:
    """A Pi user (uid 1000, home /home/pi), DNS for pip, and qemu where a non-F binfmt entry looks for it."""
    etc = root / "etc"
    with open(etc / "passwd", "a") as f:
        f.write(f"pi:x:{PI_UID}:{PI_UID}:pi:{PI_HOME}:/bin/bash\n")
    with open(etc / "group", "a") as f:
        f.write(f"pi:x:{PI_UID}:\n")
    home = root / PI_HOME.lstrip("/")
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, PI_UID, PI_UID)
    resolv = etc / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)
    # Without binfmt's F flag the kernel opens the interpreter path inside the chroot.
    interp = re.search(r"^interpreter (\S+)", (BINFMT / f"qemu-{arch.qemu}").read_text(), re.M)
    if interp:
        dest = root / interp.group(1).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(interp.group(1)), dest)


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else ""
    try:
        if cmd == "setup-host":
            print(setup_host())
        elif cmd == "problem":
            print(host_problem() or "")
        elif cmd == "build":
            names = argv[1:] or list(ARCHES)
            for name in names:
                if name not in ARCHES:
                    raise PiError(f"unknown architecture '{name}' (known: {', '.join(ARCHES)})")
            with ThreadPoolExecutor(len(names)) as pool:  # the architectures in parallel
                for root in pool.map(lambda n: build_root(ARCHES[n]), names):
                    print(root)
        else:
            print(__doc__.split("CLI")[1].strip(), file=sys.stderr)
            return 2
    except PiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
