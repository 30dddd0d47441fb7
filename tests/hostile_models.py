"""Hostile .tflite files built in code from a real deployment file (nothing binary is committed).

Each builder takes a real polyhead .tflite (flatbuffer + card), edits the flatbuffer with the
runtime's own schema classes (``ai_edge_litert.schema_py_generated``, object API) or the card, and
re-embeds the card with a *recomputed* SHA-256, as an attacker who can write the file would: the
hash then passes, and only the model check, the card validation or containment stand in the way.
Needs the main env (ai-edge-litert and flatbuffers).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.contract.card import ModelCard
from edge.contract.card_archive import embed_card, read_card, strip_card


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def unpack(tflite: bytes):
    """The flatbuffer (card stripped) as the schema's mutable object tree (``ModelT``)."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(strip_card(tflite), 0))


def pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def rewrite(src: Path, dst: Path, edit_model: Callable | None = None,
            edit_card: Callable[[ModelCard], ModelCard] | None = None) -> Path:
    """``src`` with its flatbuffer and/or card edited, the card re-hashed, written to ``dst``."""
    data = src.read_bytes()
    card = read_card(src)
    flat = strip_card(data)
    if edit_model is not None:
        model = unpack(data)
        edit_model(model)
        flat = pack(model)
    if edit_card is not None:
        card = edit_card(card)
    dst.write_bytes(embed_card(flat, card.with_updates(model_sha256="")))
    return dst


def _add_buffer(model, data: bytes) -> int:
    buf = _schema().BufferT()
    buf.data = np.frombuffer(data, np.uint8).copy() if data else None
    model.buffers.append(buf)
    return len(model.buffers) - 1


def _add_tensor(model, graph: int, shape: list[int], ttype: int, buffer: int = 0, name: str = "t") -> int:
    t = _schema().TensorT()
    t.shape, t.type, t.buffer, t.name = list(shape), ttype, buffer, name.encode()
    model.subgraphs[graph].tensors.append(t)
    return len(model.subgraphs[graph].tensors) - 1


def signature_subgraph(index: int) -> Callable:
    """The signature runs subgraph ``index`` (out of range: 1 with one subgraph, or 5)."""
    def edit(model) -> None:
        model.signatureDefs[0].subgraphIndex = index
    return edit


def signature_input_constant(model) -> None:
    """The signature's input is a constant tensor of the right shape (SetTensor would write into it)."""
    schema = _schema()
    g = model.subgraphs[0]
    src = g.tensors[g.inputs[0]]
    size = int(np.prod(src.shape)) * {schema.TensorType.FLOAT32: 4}.get(src.type, 1)
    t = _add_tensor(model, 0, list(src.shape), src.type, _add_buffer(model, bytes(size)), "const_input")
    g.tensors[t].quantization = src.quantization
    model.signatureDefs[0].inputs[0].tensorIndex = t


def while_true_first(model) -> None:
    """A WHILE op whose condition is a constant true, in front of the first op (hangs the runtime)."""
    schema = _schema()
    int32, boolean = schema.TensorType.INT32, schema.TensorType.BOOL
    # cond: (int32) -> constant true; body: (int32) -> the same int32
    for is_cond in (True, False):
        g = schema.SubGraphT()
        g.tensors, g.operators = [], []
        model.subgraphs.append(g)
        n = len(model.subgraphs) - 1
        x = _add_tensor(model, n, [], int32, name="x")
        g.inputs = [x]
        g.outputs = [_add_tensor(model, n, [], boolean, _add_buffer(model, b"\x01"), "true")] if is_cond else [x]
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = schema.BuiltinOperator.WHILE, 119, 1
    model.operatorCodes.append(code)
    start = _add_tensor(model, 0, [], int32, _add_buffer(model, bytes(4)), "start")
    out = _add_tensor(model, 0, [], int32, name="loop_out")
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [start], [out]
    op.builtinOptionsType = schema.BuiltinOptions.WhileOptions
    op.builtinOptions = schema.WhileOptionsT()
    op.builtinOptions.condSubgraphIndex = len(model.subgraphs) - 2
    op.builtinOptions.bodySubgraphIndex = len(model.subgraphs) - 1
    model.subgraphs[0].operators.insert(0, op)


def huge_input(side: int) -> tuple[Callable, Callable]:
    """(model edit, card edit): an input of side x side pixels in both model and card."""
    def edit_model(model) -> None:
        g = model.subgraphs[0]
        g.tensors[g.inputs[0]].shape = [1, side, side, 3]
        g.tensors[g.inputs[0]].shapeSignature = None

    def edit_card(card: ModelCard) -> ModelCard:
        from dataclasses import replace

        return card.with_updates(input=replace(card.input, height=side, width=side))
    return edit_model, edit_card


def card_with_schema_class(card: ModelCard, head: str, old: str, new: str) -> ModelCard:
    """The card with class ``old`` of ``head`` renamed ``new`` (e.g. a lone surrogate), as raw JSON allows."""
    from edge.contract.schema import LabelSchema

    d = card.schema.to_dict()
    for h in d["heads"]:
        if h["name"] == head:
            h["classes"] = [new if c == old else c for c in h["classes"]]
    d["combinations"] = [[new if c == old else c for c in combo] for combo in d.get("combinations", [])]
    return card.with_updates(schema=LabelSchema.from_dict(d))


def absurd_scale(model) -> None:
    """A weight tensor's first per-channel scale set to 3e35 (fuzz mutant 26: heap corruption, SIGABRT)."""
    for t in model.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) > 1:
            q.scale = q.scale.copy()
            q.scale[0] = 3e35
            return
    raise ValueError("no per-channel quantised tensor in this model")
