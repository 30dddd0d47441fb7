"""The model check's graph rules: buffers, operators, signatures and dataflow (``edge.safety.modelcheck``).

Each rule raises ``Refused`` naming the rule and what broke it; ``edge.safety.modelcheck`` turns that into
one line naming the file. The tensor rules (types, shapes, quantisation) are
``edge.safety.modelcheck_tensors``.
"""

from __future__ import annotations

from edge.safety.flatbuf import BufferF, OperatorCodeF, OperatorF, SignatureDefF, Table, TensorMapF


class Refused(Exception):
    """A rule of the model check is broken: ``rule`` names it, ``detail`` says how."""

    def __init__(self, rule: str, detail: str):
        super().__init__(rule, detail)
        self.rule, self.detail = rule, detail


ALLOWED_OPERATORS = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC", 17: "MAX_POOL_2D", 18: "MUL", 19: "RELU",
    21: "RELU6", 22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 40: "MEAN", 41: "SUB", 45: "STRIDED_SLICE",
    77: "SHAPE", 83: "PACK", 114: "QUANTIZE", 117: "HARD_SWISH",
}
"""BuiltinOperator code -> name: what polyhead's converter emits for every registered backbone,
approach and precision (tests/converter_ops.py prints it; rerun it when a backbone or precision is added)."""


def constant_buffers(buffers: list[Table], file_size: int) -> set[int]:
    """Indices of buffers that hold data (inline, or at an offset into the file)."""
    constant = set()
    for i, b in enumerate(buffers):
        offset, size = b.u64(BufferF.OFFSET), b.u64(BufferF.SIZE)
        if offset > 1 and offset + size > file_size:
            raise Refused("indices", f"buffer {i} points past the end of the file")
        if b.vector_length(BufferF.DATA) or (offset > 1 and size):
            constant.add(i)
    return constant


def operator_names(codes: list[Table]) -> list[str]:
    """The name of each operator code, refusing any not in ``ALLOWED_OPERATORS``."""
    names = []
    for i, oc in enumerate(codes):
        # Codes above 127 live in builtin_code; the deprecated int8 field holds the rest.
        code = max(oc.i32(OperatorCodeF.BUILTIN_CODE), oc.i8(OperatorCodeF.DEPRECATED_BUILTIN_CODE))
        if code not in ALLOWED_OPERATORS:
            what = "a custom operator" if code == 32 else f"builtin operator {code}"
            raise Refused("operators", f"operator code {i} is {what}, not one polyhead's converter emits "
                           "(no control flow, no custom ops)")
        names.append(ALLOWED_OPERATORS[code])
    return names


def check_signatures(sigs: list[Table], wanted: str | None, n_subgraphs: int, inputs: list[int], outputs: list[int],
                     is_const: list[bool]) -> None:
    """Refuse a missing ``wanted`` signature (None: check all), or one whose subgraph or tensors are not
    the subgraph's own inputs and outputs, or whose input is a constant."""
    keys = []
    for s in sigs:
        key = s.string(SignatureDefF.SIGNATURE_KEY).decode("utf-8", "replace")
        keys.append(key)
        if wanted is not None and key != wanted:
            continue
        sub = s.scalar(SignatureDefF.SUBGRAPH_INDEX)
        if sub >= n_subgraphs:
            raise Refused("signature", f"signature {key!r} runs subgraph {sub}; the file has {n_subgraphs}")
        for kind, field, allowed in (("input", SignatureDefF.INPUTS, inputs), ("output", SignatureDefF.OUTPUTS, outputs)):
            for m in s.tables(field):
                ti = m.scalar(TensorMapF.TENSOR_INDEX)
                if ti not in allowed:
                    raise Refused("signature", f"signature {key!r} {kind} tensor {ti} is not a subgraph {kind}")
                if kind == "input" and is_const[ti]:
                    raise Refused("signature", f"signature {key!r} input tensor {ti} is a constant")
    if wanted is not None and wanted not in keys:
        raise Refused("signature", f"no signature {wanted!r} (the file has {len(keys)})")
    if any(is_const[i] for i in inputs):
        raise Refused("signature", "a subgraph input is a constant tensor")


def check_dataflow(operators: list[Table], ops: list[str], n_tensors: int, inputs: list[int], outputs: list[int],
                   is_const: list[bool]) -> list[str]:
    """Refuse operators out of dataflow order, bad indices, writes to constants; the op names used."""
    ready = list(is_const)
    for i in inputs:
        ready[i] = True
    used = []
    for n, op in enumerate(operators):
        code = op.scalar(OperatorF.OPCODE_INDEX)
        if code >= len(ops):
            raise Refused("indices", f"operator {n} uses operator code {code}; the file has {len(ops)}")
        used.append(ops[code])
        for t in op.ints(OperatorF.INPUTS):
            if t == -1:
                continue  # an optional input left out
            if not 0 <= t < n_tensors:
                raise Refused("indices", f"operator {n} ({ops[code]}) reads tensor {t}; the subgraph has {n_tensors}")
            if not ready[t]:
                raise Refused("dataflow", f"operator {n} ({ops[code]}) reads tensor {t} before any operator writes it")
        for t in op.ints(OperatorF.OUTPUTS) + op.ints(OperatorF.INTERMEDIATES):
            if not 0 <= t < n_tensors:
                raise Refused("indices", f"operator {n} ({ops[code]}) writes tensor {t}; the subgraph has {n_tensors}")
            if is_const[t] or t in inputs:
                raise Refused("dataflow", f"operator {n} ({ops[code]}) writes tensor {t}, a constant or input")
            ready[t] = True
    missing = [t for t in outputs if not ready[t]]
    if missing:
        raise Refused("dataflow", f"subgraph output tensor {missing[0]} is never written")
    return used
