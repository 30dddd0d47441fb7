"""Models one runtime is known to crash on, refused with one line before that runtime sees them.

``edge.safety.modelcheck`` refuses what no interpreter should run. This refuses what one runtime on one
architecture cannot run although others can, as found by running the edge package on emulated
Raspberry Pi OS (tests/pi, docs/raspberry-pi.md):

- **tflite-runtime 2.14 on ARM** (aarch64 and armv7l alike) dies with SIGSEGV, a load through a
  NULL pointer inside its int8 kernels, when it invokes an int8 FULLY_CONNECTED whose weights are
  quantised per channel and that has fewer than 4 outputs or fewer than 8 inputs. A head with 2 or
  3 classes is such a layer. The same layers with per-tensor weights run, as polyhead's converter
  writes them (``convert.tflite.DENSE_PER_CHANNEL``). A single output (one scale) runs too, and
  so does every such file on x86 and on ai-edge-litert. tflite-runtime has no release after 2.14.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.safety.flatbuf import OperatorF, QuantizationF, Table, TensorF

ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv6l", "armv8l")
_INT8 = 9


@dataclass(frozen=True)
class DenseLayer:
    """A FULLY_CONNECTED operator's weights: ``outputs`` x ``inputs``, int8 per-channel or not."""

    operator: int
    outputs: int
    inputs: int
    int8_per_channel: bool


def dense_layers(operators: list[Table], ops: list[str], tensors: list[Table]) -> tuple[DenseLayer, ...]:
    """Every FULLY_CONNECTED of a checked subgraph (indices are in range: the model check ran first)."""
    found = []
    for n, op in enumerate(operators):
        args = op.ints(OperatorF.INPUTS) if ops[op.scalar(OperatorF.OPCODE_INDEX)] == "FULLY_CONNECTED" else []
        if len(args) < 2 or args[1] < 0:
            continue
        weights = tensors[args[1]]
        shape = weights.ints(TensorF.SHAPE)
        if len(shape) != 2:
            continue
        q = weights.table(TensorF.QUANTIZATION)
        per_channel = (weights.u8(TensorF.TYPE) == _INT8 and q is not None
                       and q.span(QuantizationF.SCALE, 4)[1] > 1)
        found.append(DenseLayer(n, shape[0], shape[1], per_channel))
    return tuple(found)


def known_crash(layers: tuple[DenseLayer, ...], runtime: str, version: str, machine: str) -> str | None:
    """Why ``runtime`` ``version`` on ``machine`` would crash on a model with these dense layers
    (one clause, naming the layer and the way out), or None."""
    if runtime != "tflite-runtime" or machine not in ARM_MACHINES:  # seen on 2.14, its last release
        return None
    for d in layers:
        if d.int8_per_channel and (d.outputs < 4 or d.inputs < 8):
            return (f"tflite-runtime {version} on {machine} crashes (SIGSEGV) on its int8 FULLY_CONNECTED operator "
                    f"{d.operator} ({d.outputs} outputs x {d.inputs} inputs, per-channel weights); install "
                    "ai-edge-litert, or convert with per-tensor dense weights as `python -m convert` does")
    return None

