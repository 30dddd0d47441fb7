"""Signed deployments (optional, off by default): Ed25519 over a model file, model and card together.

The card's SHA-256 binds a card to its model, but anyone who can write the file can rebuild a
consistent card for a modified model. A signature says *who* made the file: ``sign(path, key)``
(called by ``python -m convert ... --sign-key KEY``) writes ``<file>.sig`` beside it, and
``verify(path, public_key)`` (``polyhead-edge ... --trusted-key PUB`` or ``$POLYHEAD_TRUSTED_KEY``)
refuses a file without a valid signature by that key before anything else reads it.

What is signed: the statement ``polyhead-signature-v1\\n<sha256 of the whole file>``, so the
flatbuffer and the card archive at its end are covered byte for byte. Keys are PEM files (an
Ed25519 private key to sign, its public key to verify). Needs the ``sign`` extra (cryptography).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from edge.errors import PolyheadError
from edge.text import printable

TRUSTED_KEY_ENV = "POLYHEAD_TRUSTED_KEY"
SIGNATURE_SUFFIX = ".sig"
_FORMAT = "polyhead-signature-v1"
_MAX_SIG_BYTES = 4096


class SignatureError(PolyheadError):
    """A file is unsigned, wrongly signed, or a key cannot be read (one line naming the file)."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SignatureError("signatures need the 'cryptography' package: pip install 'polyhead[sign]'") from None
    return serialization, ed25519, InvalidSignature


def signature_path(path: str | os.PathLike) -> Path:
    """Where the signature of ``path`` lives: ``<file>.sig`` beside it."""
    return Path(os.fspath(path) + SIGNATURE_SUFFIX)


def _file_sha256(path: str | os.PathLike) -> str:
    import hashlib

    from edge.safety.paths import open_regular

    digest = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _statement(sha256: str) -> bytes:
    return f"{_FORMAT}\n{sha256}".encode("ascii")


def _read_key(key_path: str | os.PathLike, private: bool):
    serialization, ed25519, _ = _crypto()
    from edge.safety.paths import open_regular

    try:
        with open_regular(key_path) as f:
            data = f.read(1 << 16)
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (PolyheadError, ValueError, TypeError) as e:
        kind = "private" if private else "public"
        raise SignatureError(f"{printable(key_path)}: not a readable Ed25519 {kind} key PEM ({type(e).__name__})") from None
    wanted = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, wanted):
        raise SignatureError(f"{printable(key_path)}: not an Ed25519 key")
    return key


def sign(path: str | os.PathLike, key_path: str | os.PathLike) -> Path:
    """Sign the model file ``path`` (model and card) with the Ed25519 private key PEM at ``key_path``;
    writes ``<path>.sig`` atomically and returns its path."""
    from edge.io import atomic_write_text

    key = _read_key(key_path, private=True)
    sha = _file_sha256(path)
    record = {"format": _FORMAT, "sha256": sha,
              "signature": base64.b64encode(key.sign(_statement(sha))).decode("ascii")}
    return atomic_write_text(signature_path(path), json.dumps(record) + "\n")


def verify(path: str | os.PathLike, public_key: str | os.PathLike | object) -> None:
    """Refuse ``path`` (``SignatureError``) unless ``<path>.sig`` is a valid signature of its current
    bytes by ``public_key`` (a PEM path, or a key loaded by ``load_public_key``)."""
    _, _, invalid = _crypto()
    key = load_public_key(public_key) if isinstance(public_key, (str, os.PathLike)) else public_key
    sig_path = signature_path(path)
    name = printable(path)
    if not os.path.lexists(sig_path):
        raise SignatureError(f"{name}: unsigned (no {sig_path.name}), and a trusted key is set")
    from edge.safety.paths import open_regular

    try:
        with open_regular(sig_path) as f:
            record = json.loads(f.read(_MAX_SIG_BYTES + 1)[:_MAX_SIG_BYTES].decode("ascii"))
        if record.get("format") != _FORMAT:
            raise ValueError("unknown format")
        sha, signature = str(record["sha256"]), base64.b64decode(record["signature"], validate=True)
    except (PolyheadError, ValueError, KeyError, TypeError, AttributeError):
        raise SignatureError(f"{name}: its signature file {printable(sig_path.name)} is malformed") from None
    if _file_sha256(path) != sha:
        raise SignatureError(f"{name}: the file does not match its signature (modified after signing)")
    try:
        key.verify(signature, _statement(sha))
    except invalid:
        raise SignatureError(f"{name}: not signed by the trusted key") from None


def load_public_key(key_path: str | os.PathLike):
    """The Ed25519 public key PEM at ``key_path`` (``SignatureError`` if it is not one)."""
    return _read_key(key_path, private=False)


def trusted_key(given: str | None) -> str | None:
    """The trusted public key path: the CLI's ``--trusted-key``, else ``$POLYHEAD_TRUSTED_KEY``, else None."""
    return given or os.environ.get(TRUSTED_KEY_ENV) or None


def generate_keypair(private_path: str | os.PathLike, public_path: str | os.PathLike) -> None:
    """Write a new Ed25519 key pair as PEM files (the private one 0600)."""
    serialization, ed25519, _ = _crypto()
    from edge.io import atomic_write_bytes

    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write_bytes(private_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    os.chmod(private_path, 0o600)
    atomic_write_bytes(public_path, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo))



def _main(argv: list[str]) -> int:
    """``python -m edge.safety.signing keygen PRIVATE PUBLIC`` | ``sign PRIVATE FILE...`` | ``verify PUBLIC FILE...``."""
    import sys

    usage = ("usage: python -m edge.safety.signing keygen PRIVATE.pem PUBLIC.pem | sign PRIVATE.pem FILE... | "
             "verify PUBLIC.pem FILE...")
    if len(argv) < 3 or argv[0] not in ("keygen", "sign", "verify") or (argv[0] == "keygen" and len(argv) != 3):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "keygen":
            generate_keypair(argv[1], argv[2])
            print(f"wrote {printable(argv[1])} (keep it secret, give it to convert --sign-key) and "
                  f"{printable(argv[2])} (give it to polyhead-edge --trusted-key)")
        for f in argv[2:] if argv[0] != "keygen" else ():
            if argv[0] == "sign":
                print(printable(sign(f, argv[1])))
            else:
                verify(f, argv[1])
                print(f"{printable(f)}: signed by the trusted key")
    except (PolyheadError, OSError) as e:
        print(f"Error: {printable(str(e))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
