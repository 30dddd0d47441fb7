"""The one list of Debian packages the tests need (tests/system_packages.py): every entry says why,
installs only what is missing, never what a tool merely recommends, and nothing at all when not root."""

from __future__ import annotations

import subprocess

import pytest
import system_packages
from system_packages import PACKAGES, SystemPackageError


def test_every_package_says_why_and_what_proves_it():
    names = [p.name for p in PACKAGES]
    assert len(names) == len(set(names))
    for p in PACKAGES:
        assert p.reason and set(p.groups) <= set(system_packages.GROUPS), p
    assert {p.name for p in system_packages.packages(["video"])} == {"ffmpeg", "chromium"}
    assert [p.name for p in system_packages.packages(["fresh"])] == ["mmdebstrap"]
    assert system_packages.packages() == PACKAGES
    with pytest.raises(SystemPackageError, match="unknown group 'gpu' \\(known: pi, mediapipe, video, fresh\\)"):
        system_packages.packages(["gpu"])


def test_not_root_installs_nothing_and_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system_packages, "installed", lambda name: name != "ffmpeg")

    def no_apt(*a, **kw):
        raise AssertionError(f"ran {a[0]}")

    monkeypatch.setattr(subprocess, "run", no_apt)
    assert system_packages.install(["video"]) == "setup-system: not root, nothing installed; missing: ffmpeg"


def test_root_installs_only_the_missing_ones(monkeypatch):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system_packages, "installed", lambda name: name in ("mmdebstrap", "rsync"))
    ran = []
    monkeypatch.setattr(system_packages, "_run", lambda cmd, what: ran.append(cmd))
    assert system_packages.install(["pi"], label="setup-pi") == (
        "setup-pi: installed arch-test qemu-user-static binfmt-support")
    assert ran == [["apt-get", "update", "-qq"],
                   ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                    "arch-test", "qemu-user-static", "binfmt-support"]]
    monkeypatch.setattr(system_packages, "installed", lambda name: True)
    ran.clear()
    assert system_packages.install(["video"]) == "setup-system: ffmpeg chromium already installed"
    assert ran == []


def test_a_failed_apt_is_one_line(monkeypatch):
    monkeypatch.setattr(system_packages.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system_packages, "installed", lambda name: False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 100, "", "Reading package lists...\nE: Unable to locate package chromium\n"))
    with pytest.raises(SystemPackageError) as err:
        system_packages.install(["video"])
    assert str(err.value) == "apt-get update failed (exit 100): E: Unable to locate package chromium"
