"""The model card: round trip, validation, tampering, size limits. No TensorFlow needed."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace

import pytest
from edge_fixtures import HEADS, SCHEMA

from edge.contract.card import MAX_CARD_BYTES, CardError, InputSpec, ModelCard
from edge.contract.card_archive import (
    CARD_MEMBER,
    embed_card,
    read_card,
    read_card_bytes,
    strip_card,
    write_model,
)

FAKE_MODEL = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4


def _card(**kw) -> ModelCard:
    base = dict(variant="multihead", approach="multihead", schema=SCHEMA, heads=HEADS,
                outputs={"make": "make", "type": "type"}, input=InputSpec("image", 32, 32, 3, "uint8", 1.0, 0),
                backbone="tiny", precision="int8", converter_version="2.21.0", tensorflow_version="2.21.0",
                runtime_compat={"tflite-runtime 2.14.0": {"loads": True, "missing_ops": []}},
                extra={"note": "x"})
    base.update(kw)
    return ModelCard(**base)


def test_round_trip(tmp_path):
    card = _card()
    path = write_model(tmp_path / "m.tflite", FAKE_MODEL, card)
    back = read_card(path)
    assert back == replace(card, model_sha256=back.model_sha256) and len(back.model_sha256) == 64
    assert strip_card(path.read_bytes()) == FAKE_MODEL
    assert read_card_bytes(path.read_bytes(), "x") == back
    # Re-embedding replaces the card, never stacks a second one.
    again = embed_card(path.read_bytes(), replace(card, backbone="other"))
    assert strip_card(again) == FAKE_MODEL and read_card_bytes(again).backbone == "other"


def test_nested_runtime_compat_records_round_trip(tmp_path):
    """runtime_compat entries may carry nested JSON records (a check, an agreement): only loads,
    missing_ops, error and status have a required type, and every string is vetted as elsewhere."""
    check = {"n": 4, "heads": {"make": {"accuracy": 0.5, "keras_accuracy": 0.5, "drop": 0.0}}, "joint_accuracy": 0.25}
    compat = {"ai-edge-litert": {"runtime": "ai-edge-litert 2.3.0", "loads": True, "status": "ok"},
              "tflite-runtime": {"runtime": "tflite-runtime 2.14.0", "loads": True, "missing_ops": [], "error": None,
                                 "vs_ai_edge_litert": {"agreement": 0.97, "max_prob_diff": 0.3},
                                 "check": check, "status": "ok"}}
    path = write_model(tmp_path / "m.tflite", FAKE_MODEL, _card(runtime_compat=compat))
    assert read_card(path).runtime_compat == compat


def test_written_files_get_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_model(tmp_path / "m.tflite", FAKE_MODEL, _card())
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kw, match", [
    ({"approach": "two-model"}, "approach"),
    ({"precision": "int4"}, "precision"),
    ({"outputs": {"make": "make"}}, "needs outputs"),
    ({"heads": ("make",)}, "serves every head"),
    ({"heads": ("make", "make")}, "distinct heads"),
])
def test_invalid_cards(kw, match):
    with pytest.raises(CardError, match=match):
        _card(**kw)


@pytest.mark.parametrize("spec, match", [
    (dict(dtype="int16"), "dtype"), (dict(height=0), "height"), (dict(dtype="int8", scale=None), "scale"),
    (dict(scale=-1.0), "scale"), (dict(value_range=(255.0, 0.0)), "value_range"),
])
def test_invalid_input_specs(spec, match):
    base = dict(name="image", height=32, width=32, channels=3, dtype="uint8", scale=1.0, zero_point=0)
    base.update(spec)
    with pytest.raises(CardError, match=match):
        InputSpec(**base)


def _zip_after(model: bytes, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    buf.write(model)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_missing_unknown_and_malformed_cards():
    with pytest.raises(CardError, match="no model card"):
        read_card_bytes(FAKE_MODEL, "m.tflite")
    d = _card().to_dict()
    for change, match in (({"format_version": 99}, "format_version"), ({"schema": {"x": 1}}, "schema"),
                          ({"heads": 5}, "malformed"), ({"input": {"name": "image"}}, "malformed"),
                          ({"outputs": ["make"]}, "outputs")):
        data = _zip_after(FAKE_MODEL, {CARD_MEMBER: json.dumps({**d, **change}).encode()})
        with pytest.raises(CardError, match=match) as e:
            read_card_bytes(data, "m.tflite")
        assert "\n" not in str(e.value) and str(e.value).startswith("m.tflite: ")
    for raw, match in ((b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"),
                       (b"[1, 2]", "JSON object"), (b"9" * 5000, "not valid JSON")):
        with pytest.raises(CardError, match=match):
            read_card_bytes(_zip_after(FAKE_MODEL, {CARD_MEMBER: raw}), "m.tflite")


def test_extra_members_and_oversized_cards_are_refused():
    card = _card().to_json_bytes()
    # Label files may follow the card (tests/test_metadata_card.py); a path as a member name may not.
    with pytest.raises(CardError, match="plain file name"):
        read_card_bytes(_zip_after(FAKE_MODEL, {CARD_MEMBER: card, "../../evil.sh": b"rm -rf /"}))
    with pytest.raises(CardError, match="no model card"):
        read_card_bytes(_zip_after(FAKE_MODEL, {"labels.txt": b"a"}))
    # 2 MB of spaces compresses to a few kB: the declared size is checked before reading.
    huge = b'{"a": 1' + b" " * (2 * MAX_CARD_BYTES) + b"}"
    with pytest.raises(CardError, match="limit"):
        read_card_bytes(_zip_after(FAKE_MODEL, {CARD_MEMBER: huge}))
    with pytest.raises(CardError, match="limit"):
        _card(extra={"blob": "x" * (MAX_CARD_BYTES + 1)}).to_json_bytes()


def test_tampered_model_or_moved_card(tmp_path):
    path = write_model(tmp_path / "m.tflite", FAKE_MODEL, _card())
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF
    with pytest.raises(CardError, match="does not match its card"):
        read_card_bytes(bytes(data), "m.tflite")
    other = write_model(tmp_path / "o.tflite", FAKE_MODEL[:-8] + b"\x00" * 8, _card())
    moved = strip_card(other.read_bytes()) + path.read_bytes()[len(FAKE_MODEL):]
    with pytest.raises(CardError, match="does not match its card"):
        read_card_bytes(moved, "o.tflite")
    with pytest.raises(CardError, match="cannot read"):
        read_card(tmp_path / "missing.tflite")
