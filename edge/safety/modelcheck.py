"""A semantic check of a .tflite file before any interpreter sees it.

The interpreter verifies the flatbuffer's *structure* (offsets, bounds); it does not check what the
graph means, and files that pass its verifier still crash it (a signature naming a subgraph that does
not exist, a signature input that is a constant tensor: SetTensor then writes into the read-only
mapped file), hang it (a WHILE whose condition is a constant true) or exhaust memory (an 8192x8192
input). This module refuses such files with one line naming the file and the rule broken:

- ``subgraphs``: exactly one subgraph (polyhead's converter never emits control flow);
- ``signature``: the card's signature exists, its subgraph exists, its inputs and outputs are in range,
  are the subgraph's inputs/outputs, and no input is a constant tensor;
- ``operators``: every operator is on the allow-list of what polyhead's converter emits
  (tests/converter_ops.py derives it), custom operators and control flow are refused;
- ``indices``: every operator code, tensor and buffer index is in range;
- ``dataflow``: operators are in dataflow order (each reads only tensors that exist by then), none
  writes a constant, and every subgraph output is produced;
- ``quantization``: scales finite and in a sane range, zero points inside their type, per-channel
  counts matching the shape (an absurd scale makes an int8 kernel corrupt the heap);
- ``size``: the input's pixels and the arena estimated from tensor shapes are under ``ModelLimits``.

This module runs the rules in order and owns the limits (``ModelLimits``, the ``size`` rule); the
graph rules are ``edge.safety.modelcheck_graph``, the tensor and quantisation rules
``edge.safety.modelcheck_tensors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from edge.errors import ModelError
from edge.safety.flatbuf import FlatbufferError, ModelF, SubGraphF, root
from edge.safety.modelcheck_graph import (
    Refused,
    check_dataflow,
    check_signatures,
    constant_buffers,
    operator_names,
)
from edge.safety.modelcheck_tensors import check_tensors
from edge.safety.runtime_faults import DenseLayer, dense_layers


@dataclass(frozen=True)
class ModelLimits:
    """Caps on what a model may ask of the device (the CLI's --max-input-pixels and --max-arena-mb)."""

    max_input_pixels: int = 2048 * 2048
    max_arena_mb: float = 512.0


DEFAULT_LIMITS = ModelLimits()


class ModelCheckError(ModelError):
    """A .tflite file breaks a rule of the semantic model check (one line naming the file and rule)."""


@dataclass(frozen=True)
class ModelSummary:
    """What the check found: operator names, tensor count, the arena estimate in MB, and the dense
    layers' shapes (``edge.safety.runtime_faults`` refuses some of them on one runtime)."""

    operators: tuple[str, ...]
    tensors: int
    arena_mb: float
    dense: tuple[DenseLayer, ...] = ()


def check_model_file(path: str | os.PathLike, signature: str | None = "serving_default",
                     limits: ModelLimits = DEFAULT_LIMITS) -> ModelSummary:
    """Check the .tflite at ``path`` (a regular file; its card, if any, is ignored). Raises
    ``ModelCheckError``. ``signature`` None checks every signature the file has."""
    import mmap

    from edge.safety.paths import PathError, open_regular

    try:
        with open_regular(path) as f:
            if os.fstat(f.fileno()).st_size < 8:
                return check_model(f.read(), str(path), signature, limits)
            # Mapped, not read: the check touches only the tables, never the weights.
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return check_model(data, str(path), signature, limits)
    except PathError as e:
        raise ModelError(str(e)) from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None


def check_model(data: bytes | memoryview, name: str = "<bytes>", signature: str | None = "serving_default",
                limits: ModelLimits = DEFAULT_LIMITS) -> ModelSummary:
    """Check a .tflite flatbuffer (trailing card bytes are ignored). Raises ``ModelCheckError``."""
    try:
        return _check(data, signature, limits)
    except Refused as e:
        raise ModelCheckError(f"{name}: refused by the model check ({e.rule}): {e.detail}") from None
    except (FlatbufferError, OverflowError, MemoryError) as e:
        raise ModelCheckError(f"{name}: refused by the model check (flatbuffer): {e}") from None


def _check(data: bytes | memoryview, signature: str | None, limits: ModelLimits) -> ModelSummary:
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise Refused("flatbuffer", "not a TFLite file (no TFL3 identifier)")
    model = root(data)
    subgraphs = model.tables(ModelF.SUBGRAPHS)
    if len(subgraphs) != 1:
        raise Refused("subgraphs", f"{len(subgraphs)} subgraphs; a polyhead model has exactly one")
    n_buffers = model.vector_length(ModelF.BUFFERS)
    constant = constant_buffers(model.tables(ModelF.BUFFERS), len(data))
    ops = operator_names(model.tables(ModelF.OPERATOR_CODES))
    graph = subgraphs[0]
    tensors = graph.tables(SubGraphF.TENSORS)
    shapes, is_const = check_tensors(tensors, n_buffers, constant)
    inputs, outputs = graph.ints(SubGraphF.INPUTS), graph.ints(SubGraphF.OUTPUTS)
    for kind, idx in (("input", inputs), ("output", outputs)):
        bad = [i for i in idx if not 0 <= i < len(tensors)]
        if bad:
            raise Refused("indices", f"subgraph {kind} tensor {bad[0]} is out of range (0..{len(tensors) - 1})")
    check_signatures(model.tables(ModelF.SIGNATURE_DEFS), signature, len(subgraphs), inputs, outputs, is_const)
    operators = graph.tables(SubGraphF.OPERATORS)
    used = check_dataflow(operators, ops, len(tensors), inputs, outputs, is_const)
    arena_mb = _sizes(shapes, is_const, inputs, limits)
    return ModelSummary(tuple(sorted(set(used))), len(tensors), arena_mb, dense_layers(operators, ops, tensors))


def _sizes(shapes: list[tuple[int, list[int]]], is_const: list[bool], inputs: list[int], limits: ModelLimits) -> float:
    """The arena estimate in MB (every non-constant tensor at once: an upper bound), refusing caps."""
    for i in inputs:
        shape = shapes[i][1]
        pixels = shape[1] * shape[2] if len(shape) == 4 else _count(shape)
        if pixels > limits.max_input_pixels:
            raise Refused("size", f"input tensor {i} has {pixels} pixels {shape}, over the limit of "
                           f"{limits.max_input_pixels} (--max-input-pixels)")
    total = sum(size * _count(shape) for (size, shape), const in zip(shapes, is_const, strict=True) if not const)
    arena_mb = total / (1 << 20)
    if arena_mb > limits.max_arena_mb:
        raise Refused("size", f"tensors need about {arena_mb:.0f} MB, over the limit of {limits.max_arena_mb:g} MB "
                       "(--max-arena-mb)")
    return round(arena_mb, 3)


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
