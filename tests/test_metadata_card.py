"""The card archive with TFLite Metadata label files: one stored zip after the model, card first.

Hostile archives built here in code: the edge reader refuses each with one line, reads nothing it
would have to inflate beyond a limit, and never writes to disk. No TensorFlow needed."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from dataclasses import replace

import pytest
from edge_fixtures import HEADS, SCHEMA

from edge.contract.card import MAX_CARD_BYTES, CardError, InputSpec, ModelCard
from edge.contract.card_archive import (
    CARD_MEMBER,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS,
    embed_card,
    read_card,
    read_card_bytes,
    read_members,
    strip_card,
    write_model,
)

FAKE_MODEL = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4
LABELS = {"make_labels.txt": b"audi\nbmw\nford\ntoyota\n", "type_labels.txt": b"sedan\nsuv\nvan\n"}


def _card() -> ModelCard:
    return ModelCard(variant="multihead", approach="multihead", schema=SCHEMA, heads=HEADS,
                     outputs={"make": "make", "type": "type"}, input=InputSpec("image", 32, 32, 3, "uint8", 1.0, 0),
                     backbone="tiny", precision="int8")


def _zip(model: bytes, members: list[tuple[str, bytes, int]]) -> bytes:
    """``model`` + a zip of (name, data, compression) members, duplicates allowed."""
    buf = io.BytesIO()
    buf.write(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": wanted here
        with zipfile.ZipFile(buf, "a") as zf:
            for name, data, compression in members:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def _refused(data: bytes, match: str) -> str:
    with pytest.raises(CardError, match=match) as e:
        read_card_bytes(data, "m.tflite")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("m.tflite: "), msg
    return msg


def _signed_card(model: bytes = FAKE_MODEL) -> bytes:
    """The card JSON with the right model_sha256 for ``model``."""
    import hashlib

    return replace(_card(), model_sha256=hashlib.sha256(model).hexdigest()).to_json_bytes()


def test_card_and_label_files_in_one_stored_zip(tmp_path):
    path = write_model(tmp_path / "m.tflite", FAKE_MODEL, _card(), files=LABELS)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == [CARD_MEMBER, *LABELS]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)  # MediaPipe refuses compressed members
    # The model is the bytes before the first member, and the card's hash is over exactly those.
    assert infos[0].header_offset == len(FAKE_MODEL) and strip_card(data) == FAKE_MODEL
    card = read_card(path)
    assert card == replace(_card(), model_sha256=card.model_sha256)
    assert read_members(data) == LABELS


def test_reembedding_keeps_label_files_unless_replaced():
    with_labels = embed_card(FAKE_MODEL, _card(), LABELS)
    again = embed_card(with_labels, replace(_card(), backbone="other"))  # as convert's runtime_compat update does
    assert read_members(again) == LABELS and read_card_bytes(again).backbone == "other"
    assert strip_card(again) == FAKE_MODEL
    replaced = embed_card(with_labels, _card(), {"x_labels.txt": b"a\n"})
    assert read_members(replaced) == {"x_labels.txt": b"a\n"}
    assert read_members(embed_card(with_labels, _card(), {})) == {}


def test_previous_format_still_loads():
    """Before TFLite Metadata: one deflated metadata.json member, nothing else."""
    old = _zip(FAKE_MODEL, [(CARD_MEMBER, _signed_card(), zipfile.ZIP_DEFLATED)])
    card = read_card_bytes(old)
    assert card.backbone == "tiny" and read_members(old) == {} and strip_card(old) == FAKE_MODEL
    # Re-embedding a previous-format file writes the new, stored format.
    new = embed_card(old, card)
    with zipfile.ZipFile(io.BytesIO(new)) as zf:
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED]


@pytest.mark.parametrize("name", ["../evil.sh", "a/b.txt", "/abs.txt", "C:\\x.txt", "..", ".hidden", "dir/",
                                  "x\x01y.txt", "labels txt", "a..b.txt", "x" * 200])
def test_paths_in_member_names_are_refused(name):
    data = _zip(FAKE_MODEL, [(CARD_MEMBER, _signed_card(), zipfile.ZIP_STORED), (name, b"a\n", zipfile.ZIP_STORED)])
    _refused(data, "plain file name")
    with pytest.raises(CardError, match="plain file name"):
        embed_card(FAKE_MODEL, _card(), {name: b"a\n"})


def test_two_cards_and_duplicates_are_refused():
    card = _signed_card()
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, card, 0), (CARD_MEMBER, card, 0)]), "two model cards")
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, card, 0), ("a.txt", b"1", 0), ("A.txt", b"2", 0)]), "duplicate member")
    _refused(_zip(FAKE_MODEL, [("make_labels.txt", b"a", 0)]), "no model card")
    with pytest.raises(CardError, match="card's own member name"):
        embed_card(FAKE_MODEL, _card(), {CARD_MEMBER: b"{}"})


def test_oversized_and_compressed_members_are_refused():
    card = _signed_card()
    # A stored card over the limit, and a deflated one that would inflate past it (a few kB on disk).
    big = b'{"a": 1' + b" " * (MAX_CARD_BYTES + 10) + b"}"
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, big, zipfile.ZIP_STORED)]), "limit")
    bomb = _zip(FAKE_MODEL, [(CARD_MEMBER, big * 20, zipfile.ZIP_DEFLATED)])
    assert len(bomb) < 200_000
    _refused(bomb, "limit")
    # Label files are stored; a compressed one, let alone one that inflates to 50 MB, is never inflated.
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, card, 0), ("l.txt", b"a\n" * 100, zipfile.ZIP_DEFLATED)]), "compressed")
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, card, 0), ("l.txt", bytes(50 << 20), zipfile.ZIP_DEFLATED)]), "compressed")
    _refused(_zip(FAKE_MODEL, [(CARD_MEMBER, card, 0), ("l.txt", bytes(MAX_MEMBER_BYTES + 1), 0)]), "limit")
    many = [(CARD_MEMBER, card, 0)] + [(f"f{i}.txt", b"", 0) for i in range(MAX_MEMBERS)]
    _refused(_zip(FAKE_MODEL, many), "over the limit")
    with pytest.raises(CardError, match="limit"):
        embed_card(FAKE_MODEL, _card(), {"l.txt": bytes(MAX_MEMBER_BYTES + 1)})


def test_hash_mismatch_is_refused(tmp_path):
    data = bytearray(embed_card(FAKE_MODEL, _card(), LABELS))
    data[100] ^= 0xFF  # inside the model
    _refused(bytes(data), "does not match its card")
    # A card moved onto another model (with its label files) is refused too.
    other = FAKE_MODEL[:-1] + b"\x00"
    moved = other + embed_card(FAKE_MODEL, _card(), LABELS)[len(FAKE_MODEL):]
    _refused(moved, "does not match its card")


def test_reading_never_writes_to_disk(tmp_path, monkeypatch):
    path = write_model(tmp_path / "in" / "m.tflite",
                       FAKE_MODEL, _card(), files={"x_labels.txt": b"a\n"})
    hostile = _zip(FAKE_MODEL, [(CARD_MEMBER, _signed_card(), 0), ("../escape.txt", b"x", 0)])
    (tmp_path / "in" / "bad.tflite").write_bytes(hostile)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    read_card(path)
    read_members(path.read_bytes())
    with pytest.raises(CardError):
        read_card(tmp_path / "in" / "bad.tflite")
    assert os.listdir(work) == [] and sorted(os.listdir(tmp_path / "in")) == ["bad.tflite", "m.tflite"]
    assert not (tmp_path / "escape.txt").exists()
