"""test-fresh's pure parts: the README commands it runs, the mounts it makes, the command lines.
(The run itself is `make test-fresh`, 30-60 min, not part of `make test`.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fresh_root  # noqa: E402
from fresh_root import FreshError  # noqa: E402


def test_the_readme_commands_are_the_two():
    assert fresh_root.readme_commands() == ["make all", "make test"]


def test_readme_without_commands_is_one_line(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nno block\n")
    with pytest.raises(FreshError, match=r"README.md: no ```sh block"):
        fresh_root.readme_commands(readme)


def test_the_stated_mounts_in_order(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("cert")
    ms = fresh_root.mounts(str(ca))
    assert [m.target for m in ms] == ["/proc", "/proc/sys/fs/binfmt_misc", "/sys", "/dev", "/dev/pts", "/dev/shm",
                                      "/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt"]
    assert all(m.why for m in ms)
    lines = fresh_root.mount_lines(Path("/w/root"), ms)
    assert lines[1] == "mount -t binfmt_misc binfmt_misc /w/root/proc/sys/fs/binfmt_misc"
    assert lines[-1] == f"mount --bind -o ro {ca} /w/root/etc/ssl/certs/ca-certificates.crt"
    assert "/etc/ssl" not in " ".join(m.target for m in fresh_root.mounts(str(tmp_path / "absent.crt")))


def test_each_command_runs_in_a_private_mount_namespace():
    ms = fresh_root.mounts(None)
    cmd = fresh_root.enter_cmd(Path("/w/root"), "make test", fresh_root.root_env(ci=True), ms)
    assert cmd[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    script = cmd[-1]
    assert script.index("mount -t proc") < script.index("exec /usr/sbin/chroot /w/root /usr/bin/env -i")
    assert "CI=true" in script and "HOME=/root" in script and "cd /root/polyhead\nmake test" in script
    assert "CI" not in fresh_root.root_env(ci=False)


def test_the_bare_root_holds_what_a_new_machine_has():
    cmd = fresh_root.mmdebstrap_cmd(Path("T"), ["/etc/apt/x.sources"])
    assert cmd == ["mmdebstrap", "--variant=minbase", "--arch=amd64", "--format=tar",
                   "--include=python3,python3-venv,make,git,ca-certificates", "bookworm", "T", "/etc/apt/x.sources"]
    assert fresh_root.base_tar([]).name.startswith("base-bookworm-amd64-")
    assert fresh_root.base_tar([]) != fresh_root.base_tar(["/absent/other.sources", "deb http://x bookworm main"])
