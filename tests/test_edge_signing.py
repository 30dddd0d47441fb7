"""Signed deployments: Ed25519 over the whole file (model and card), verified before anything reads
the file when a trusted key is set; unsigned, re-signed by another key, or modified files refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401

pytest.importorskip("cryptography", reason="signing needs the 'sign' extra (cryptography), not installed here")

from edge.runtime.variants import discover  # noqa: E402
from edge.safety.signing import SignatureError, generate_keypair, sign, signature_path, verify  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def signed(edge_fx, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(edge_fx / "models" / "multihead.int8.tflite", deploy)
    generate_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    sign(deploy / "multihead.int8.tflite", tmp_path / "key.pem")
    return deploy, tmp_path


def test_signed_file_verifies_and_discover_accepts_it(signed):
    deploy, keys = signed
    verify(deploy / "multihead.int8.tflite", keys / "key.pub")
    assert list(discover(deploy, trusted_key=keys / "key.pub")) == ["multihead.int8"]
    assert oct(os.stat(keys / "key.pem").st_mode & 0o777) == "0o600"


def test_wrong_key_unsigned_and_modified_files_are_refused(signed):
    deploy, keys = signed
    f = deploy / "multihead.int8.tflite"
    with pytest.raises(SignatureError, match="not signed by the trusted key"):
        verify(f, keys / "other.pub")
    data = bytearray(f.read_bytes())
    data[100] ^= 1  # one bit of the model: the card could be re-hashed, the signature cannot be redone
    f.write_bytes(bytes(data))
    with pytest.raises(SignatureError, match="modified after signing"):
        verify(f, keys / "key.pub")
    signature_path(f).unlink()
    with pytest.raises(SignatureError, match="unsigned"):
        verify(f, keys / "key.pub")
    errors: list = []
    assert discover(deploy, errors, trusted_key=keys / "key.pub") == {} and "unsigned" in errors[0][1]
    signature_path(f).write_text('{"format": "polyhead-signature-v1", "sha256": 5}\n\x00garbage')
    with pytest.raises(SignatureError, match="malformed"):
        verify(f, keys / "key.pub")


def test_a_key_that_is_not_an_ed25519_pem_is_one_line(signed):
    deploy, keys = signed
    (keys / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SignatureError, match="not a readable Ed25519 public key"):
        discover(deploy, trusted_key=keys / "bad.pub")


@pytest.mark.slow
def test_cli_trusted_key_flag_and_env(signed, edge_fx):
    deploy, keys = signed
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = [sys.executable, "-m", "edge", "predict", str(deploy), str(edge_fx / "images"), "--format", "jsonl"]
    ok = subprocess.run(run + ["--trusted-key", str(keys / "key.pub")], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr[-800:]
    bad = subprocess.run(run, capture_output=True, text=True, timeout=120,
                         env={**env, "POLYHEAD_TRUSTED_KEY": str(keys / "other.pub")})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "not signed by the trusted key" in bad.stderr
