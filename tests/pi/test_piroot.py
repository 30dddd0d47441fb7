"""The Pi harness itself: the docs' commands it runs, the cache key, and its faults (an unreachable
mirror, a full disk, an interrupted build) giving one line and no half-built cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import piroot  # noqa: E402
from piroot import ARCHES, ENVS, PiError  # noqa: E402


def test_docs_have_every_block_the_harness_runs():
    blocks = piroot.doc_blocks()
    assert set(blocks) == {"copy", "install-litert", "install-tflite-runtime", "install-armhf", "run", "live"}
    assert {e.install_block for e in ENVS} <= set(blocks)
    assert piroot.apt_packages(blocks["install-armhf"]) == ("python3-venv", "python3-numpy", "python3-pil")
    assert "sudo apt" not in piroot.shell_lines(blocks["install-armhf"])
    assert "pip install ~/polyhead" in blocks["install-litert"]
    # The armhf root gets the docs' apt packages: the block is the package list.
    cmd = piroot.mmdebstrap_cmd(ARCHES["armhf"], Path("R"))
    assert "python3-numpy" in cmd[3] and "libstdc++6" in cmd[3] and cmd[1] == "--arch=armhf"


def test_recipe_key_follows_the_docs(tmp_path, monkeypatch):
    arch = ARCHES["arm64"]
    before = piroot.root_path(arch)
    assert before == piroot.root_path(arch)  # stable
    doc = tmp_path / "raspberry-pi.md"
    doc.write_text(piroot.DOC.read_text().replace("pip install ~/polyhead\n", "pip install -v ~/polyhead\n", 1))
    monkeypatch.setattr(piroot, "DOC", doc)
    assert piroot.root_path(arch) != before
    assert piroot.root_path(ARCHES["armhf"]).name.startswith("armhf-")


def test_missing_block_is_one_line(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("```sh pi:copy\nrsync a b\n```\n")
    with pytest.raises(PiError, match=r"no ```sh pi:run block \(have: copy\)"):
        piroot.block("run", doc)
    with pytest.raises(PiError, match="cannot read"):
        piroot.block("run", tmp_path / "absent.md")


def test_mirror_is_the_one_apt_uses(tmp_path, monkeypatch):
    monkeypatch.delenv(piroot.MIRROR_ENV, raising=False)
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert piroot.debian_mirror([deb822]) == "http://mirror.example/debian"
    legacy = tmp_path / "sources.list"
    legacy.write_text("# comment\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    assert piroot.debian_mirror([legacy]) == "http://old.example/debian"
    assert piroot.debian_mirror([]) == "http://deb.debian.org/debian"
    monkeypatch.setenv(piroot.MIRROR_ENV, "http://given.example/debian/")
    assert piroot.debian_mirror([deb822]) == "http://given.example/debian"


# -- faults (need root: mmdebstrap and mounts) ----------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or piroot.host_problem() is not None,
                                reason=f"needs root and the Pi host tools: {piroot.host_problem()}")


@needs_root
def test_interrupted_build_is_removed_and_its_mounts_undone(tmp_path, monkeypatch):
    monkeypatch.setenv(piroot.CACHE_ENV, str(tmp_path))
    stale = tmp_path / ".building-arm64-abc123"
    (stale / "dev").mkdir(parents=True)
    (stale / "etc").mkdir()
    (stale / "etc" / "half").write_text("half-built")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(stale / "dev")], check=True)
    (stale / "dev" / "keep-me").write_text("inside a mount: must be unmounted, never deleted through")
    old = tmp_path / "arm64-0000000000000000"
    old.mkdir()
    other = tmp_path / "armhf-0000000000000000"
    other.mkdir()
    try:
        removed = piroot._clean_stale(ARCHES["arm64"])
    finally:
        piroot.unmount_all(tmp_path)
    assert sorted(removed) == sorted([old.name, stale.name])
    assert not stale.exists() and not old.exists() and other.exists()
    assert piroot.mounts_under(tmp_path) == []


@needs_root
@pytest.mark.slow
def test_unreachable_mirror_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(piroot.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(piroot.MIRROR_ENV, "http://127.0.0.1:9/debian")
    with pytest.raises(PiError) as err:
        piroot.build_root(ARCHES["arm64"], log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("mmdebstrap arm64 bookworm from http://127.0.0.1:9/debian failed"), msg
    assert os.listdir(tmp_path / "cache") == []


@needs_root
@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(cache)], check=True)
    monkeypatch.setenv(piroot.CACHE_ENV, str(cache))
    try:
        with pytest.raises(PiError) as err:
            piroot.build_root(ARCHES["arm64"], log=lambda m: None)
        msg = str(err.value)
        assert "\n" not in msg and "mmdebstrap arm64" in msg and "failed" in msg, msg
        assert os.listdir(cache) == []
    finally:
        piroot.unmount_all(cache)


# -- the host's packages (tests/system_packages.py, group pi) -------------------------------------


def test_a_missing_tool_is_one_line_naming_its_package(monkeypatch):
    """Issue 21: mmdebstrap only recommends arch-test, so `--no-install-recommends` dropped it; the
    list names it, and a host without it is told which package to install before any root is built."""
    import system_packages

    assert {"mmdebstrap", "arch-test", "qemu-user-static", "binfmt-support", "rsync"} <= set(piroot.HOST_PACKAGES)
    assert "--no-install-recommends" in system_packages.apt_install_cmd(["x"])
    absent = {"arch-test"}
    monkeypatch.setattr(system_packages, "which", lambda tool: None if tool in absent else f"/usr/bin/{tool}")
    monkeypatch.setattr(piroot.os, "geteuid", lambda: 0)
    msg = piroot.host_problem()
    assert msg == ("arch-test is not installed: make setup-pi installs arch-test (mmdebstrap refuses a "
                   "foreign-architecture root without it; only a Recommends of mmdebstrap)")
    with pytest.raises(PiError, match=r"^cannot build the arm64 root: arch-test is not installed: make setup-pi installs arch-test"):
        piroot.build_root(ARCHES["arm64"], log=lambda m: None)
    absent = {"qemu-arm-static"}
    assert piroot.host_problem().startswith("qemu-arm-static is not installed: make setup-pi installs qemu-user-static (")
