"""TFLite Metadata written by convert/metadata.py: label file names, the metadata content read back
by two independent readers (the flatc-generated module and edge's own), the model unchanged in
what it computes, and ``polyhead-edge info`` saying the metadata is there. MediaPipe itself reads
the files in tests/test_metadata_mediapipe.py."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
from edge_fixtures import SCHEMA, edge_fx_fixture  # noqa: F401
from hypothesis import given, settings
from hypothesis import strategies as st

from convert.metadata import (
    METADATA_NAME,
    MetadataError,
    add_metadata,
    build_metadata,
    label_file_bytes,
    label_file_names,
    output_order,
    populate,
    raw_pixels_input,
    write_model_with_metadata,
)
from edge.contract.card import InputSpec
from edge.contract.card_archive import CARD_MEMBER, check_member_name, read_card, read_members, strip_card
from edge.contract.schema import Head, LabelSchema
from edge.contract.tflite_metadata import MetadataReadError, format_summary, read_standard_metadata, summary

HOSTILE_HEADS = ["make", "Make", "a/b", "a_b", "../../etc/passwd", "..", ".hidden", "metadata.json", "C:\\x",
                 "марка", "汽车", "x" * 300, "tab\tname", "nul\x00byte", "-", "_", " "]


def _check_names(keys, names):
    assert list(names) == list(keys)
    files = list(names.values())
    assert len({f.lower() for f in files}) == len(files)  # unique, even on a case-folding file system
    for f in files:
        assert check_member_name(f) == f and f != CARD_MEMBER and f.endswith("_labels.txt")


def test_label_file_names_are_safe_and_unique():
    names = label_file_names(HOSTILE_HEADS)
    _check_names(HOSTILE_HEADS, names)
    assert names["make"] == "make_labels.txt" and names["Make"] == "Make_2_labels.txt"
    assert names["a/b"] == "a_b_labels.txt" and names["a_b"] == "a_b_2_labels.txt"
    assert label_file_names(["joint"]) == {"joint": "joint_labels.txt"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=12, unique=True))
def test_label_file_names_property(keys):
    _check_names(keys, label_file_names(keys))


def test_label_file_bytes_one_class_per_line():
    assert label_file_bytes(["a b", "c\nd", "é"]) == "a b\nc d\né\n".encode()


def test_raw_pixels_input():
    assert raw_pixels_input(1.0, 0) and raw_pixels_input(0.9999967813491821, 0)
    assert not raw_pixels_input(255 / 240, 0) and not raw_pixels_input(1.0, 3) and not raw_pixels_input(None, None)


def _buffer_data_offsets(model: bytes) -> list[int]:
    from ai_edge_litert import schema_py_generated as tfl

    m = tfl.Model.GetRootAs(model, 0)
    offsets = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        o = b._tab.Offset(4)  # field 0 (data)
        if o and b.DataLength():
            offsets.append(b._tab.Vector(o))
    return offsets


def _generated_read(model: bytes):
    """The ModelMetadata through the flatc-generated module (the writer's own schema code)."""
    from ai_edge_litert import schema_py_generated as tfl

    from convert import metadata_schema_generated as md

    m = tfl.Model.GetRootAs(model, 0)
    entries = [m.Metadata(i) for i in range(m.MetadataLength())]
    hits = [e for e in entries if e.Name() == METADATA_NAME.encode()]
    assert len(hits) == 1
    raw = m.Buffers(hits[0].Buffer()).DataAsNumpy().tobytes()
    assert md.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)
    return md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0))


@pytest.mark.parametrize("name", ["multihead.float32", "multihead.int8", "joint.float32", "joint.int8",
                                  "separate.make.float32"])
def test_metadata_content_and_model_unchanged(edge_fx, tmp_path, name):
    from edge.runtime.model import Model
    from edge.runtime.preprocess import load_image

    src = edge_fx / "models" / f"{name}.tflite"
    card = read_card(src)
    assert read_standard_metadata(src.read_bytes()) is None  # the fixtures are the previous format
    out = write_model_with_metadata(tmp_path / src.name, src.read_bytes(), card)
    data = out.read_bytes()

    # The card still binds the exact model bytes, which now hold the metadata; label files follow it.
    back = read_card(out)
    assert back == replace(card, model_sha256=back.model_sha256) and back.model_sha256 != card.model_sha256
    model = strip_card(data)
    order = output_order(model, card)
    assert sorted(order) == sorted(card.outputs)
    files = read_members(data)
    names = label_file_names(order)
    assert list(files) == [names[k] for k in order]
    for key in order:
        assert files[names[key]].decode().splitlines() == list(card.output_classes(key))

    # Read back twice: the generated module and edge's own stdlib reader agree.
    meta = _generated_read(model)
    sub = meta.subgraphMetadata[0]
    assert [t.name.decode() for t in sub.outputTensorMetadata] == list(order)
    assert [[f.name.decode() for f in t.associatedFiles] for t in sub.outputTensorMetadata] == [[names[k]] for k in order]
    assert all(t.associatedFiles[0].type == 2 for t in sub.outputTensorMetadata)  # TENSOR_AXIS_LABELS
    assert meta.minParserVersion == b"1.0.0" and meta.name and meta.description and meta.version
    edge_view = read_standard_metadata(data, name)
    assert [t.name for t in edge_view.outputs] == list(order) and edge_view.missing_files == ()
    image = edge_view.inputs[0]
    if card.input.dtype == "float32":
        assert image.normalization == ((0.0,), (1.0,))  # pixels 0..255 are the input as they are
    else:
        assert image.normalization is None and raw_pixels_input(card.input.scale, card.input.zero_point)

    # Tensor data starts on 16-byte boundaries (the schema's force_align); what the model computes is unchanged.
    assert all(off % 16 == 0 for off in _buffer_data_offsets(model))
    pixels = load_image(next((edge_fx / "images").glob("*.png")), card.input.height, card.input.width)
    before, after = Model(src).run(pixels), Model(out).run(pixels)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])

    # Populating again replaces the metadata rather than adding a second entry.
    again, _ = add_metadata(data, card)
    assert len(again) == len(model) and read_standard_metadata(again).outputs == edge_view.outputs

    s = summary(out)
    assert s["present"] and [o["name"] for o in s["outputs"]] == list(order)
    assert format_summary(s).startswith("TFLite Metadata (MediaPipe Tasks): yes")
    assert format_summary(summary(src)).endswith("none (written before polyhead added it)")


def _card_with(edge_fx, **changes):
    card = read_card(edge_fx / "models" / "multihead.float32.tflite")
    return replace(card, **changes)


def test_float_normalisation_maps_pixels_onto_the_value_range(edge_fx):
    card = _card_with(edge_fx, input=InputSpec("image", 32, 32, 3, "float32", value_range=(-1.0, 1.0)))
    meta = read_standard_metadata(populate(strip_card((edge_fx / "models" / "multihead.float32.tflite").read_bytes()),
                                           build_metadata(card, ("make", "type"), label_file_names(["make", "type"]))))
    (mean,), (std,) = meta.inputs[0].normalization
    assert (0 - mean) / std == -1.0 and (255 - mean) / std == 1.0


def test_integer_inputs(edge_fx):
    names = label_file_names(["make", "type"])
    shifted = _card_with(edge_fx, input=InputSpec("image", 32, 32, 3, "uint8", 255 / 240, 0))
    from convert import metadata_schema_generated as md

    raw = build_metadata(shifted, ("make", "type"), names)
    desc = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(raw, 0)).subgraphMetadata[0].inputTensorMetadata[0]
    assert b"MediaPipe feeds them raw" in desc.description
    signed = _card_with(edge_fx, input=InputSpec("image", 32, 32, 3, "int8", 1.0, -128))
    with pytest.raises(MetadataError, match="int8"):
        build_metadata(signed, ("make", "type"), names)


def test_hostile_head_names_give_valid_label_members(edge_fx, tmp_path):
    """A schema whose head names are not file names: the card archive still holds one valid, distinct
    label file per head, MediaPipe-style metadata names them, and the file reads back."""
    heads = ("../make", "make/", "Make")
    schema = LabelSchema((Head(heads[0], ("a", "b")), Head(heads[1], ("c", "d")), Head(heads[2], ("e", "f"))),
                         (("a", "c", "e"),))
    names = label_file_names(heads)
    card = _card_with(edge_fx, schema=schema, heads=heads, outputs={h: h for h in heads}, approach="multihead",
                      variant="multihead")
    model = populate(strip_card((edge_fx / "models" / "multihead.float32.tflite").read_bytes()),
                     build_metadata(card, heads, names))
    from edge.contract.card_archive import write_model

    out = write_model(tmp_path / "m.tflite", model, card,
                      files={names[h]: label_file_bytes(schema.head(h).classes) for h in heads})
    assert read_card(out).heads == heads
    assert sorted(read_members(out.read_bytes())) == sorted(names.values())
    assert [t.label_files[0] for t in read_standard_metadata(out.read_bytes()).outputs] == [names[h] for h in heads]
    assert not (tmp_path / "make").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_edge_metadata_reader_never_crashes(edge_fx, data):
    """Corrupted metadata bytes: the reader returns something or raises its one-line error."""
    base = _METADATA_MODEL.setdefault("m", add_metadata((edge_fx / "models" / "joint.int8.tflite").read_bytes(),
                                                        read_card(edge_fx / "models" / "joint.int8.tflite"))[0])
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    try:
        read_standard_metadata(bytes(buf))
    except MetadataReadError as e:
        assert "\n" not in str(e)


_METADATA_MODEL: dict[str, bytes] = {}


def test_edge_metadata_reader_bounds(edge_fx):
    model, _ = add_metadata((edge_fx / "models" / "joint.int8.tflite").read_bytes(),
                            read_card(edge_fx / "models" / "joint.int8.tflite"))
    with pytest.raises(MetadataReadError, match="TFL3"):
        read_standard_metadata(b"\x00" * 16, "x")
    # A vector length pointing past the end of the buffer is refused, not read.
    meta_at = model.find(b"M001") - 4
    root = struct.unpack_from("<I", model, meta_at)[0]
    broken = bytearray(model)
    struct.pack_into("<I", broken, meta_at + root, 0x7FFFFFF0)  # the root table's vtable offset
    with pytest.raises(MetadataReadError) as e:
        read_standard_metadata(bytes(broken), "m.tflite")
    assert str(e.value).startswith("m.tflite: malformed TFLite Metadata")


def test_info_shows_the_standard_metadata(edge_fx, tmp_path):
    from click.testing import CliRunner

    from edge.cli import main

    src = edge_fx / "models" / "multihead.int8.tflite"
    write_model_with_metadata(tmp_path / src.name, src.read_bytes(), read_card(src))
    res = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "TFLite Metadata (MediaPipe Tasks): yes (parser >= 1.0.0)" in res.output
    assert "make_labels.txt" in res.output and "type_labels.txt" in res.output

