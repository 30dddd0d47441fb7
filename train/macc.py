"""Multiply-accumulate (MACC) counts from a Keras graph.

Counted (one MACC = one multiply + one add, the convention of the published figures):
- ``Conv1D/2D/3D``: output positions x filters x kernel volume x input channels / groups;
- ``DepthwiseConv1D/2D``: output positions x (channels x multiplier) x kernel volume;
- ``SeparableConv1D/2D``: its depthwise part plus its 1x1 pointwise part;
- ``Conv2DTranspose``: input positions x input channels x filters x kernel area;
- ``Dense``: leading positions x inputs x units.
Counted as 0 (documented; they are a few % at most and the published figures leave them out):
pooling, batch normalisation, activations, element-wise add/multiply, normalisation/rescaling,
concatenation, reshapes. Nested models are recursed into; a layer counts as *trained* when it
and every model holding it are trainable and it has trainable weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from train.records import MaccCounts, ParamCounts


def _shape(t: Any) -> tuple:
    if isinstance(t, (list, tuple)):
        t = t[0]
    return tuple(t.shape)


def _io_shapes(layer: Any) -> tuple[tuple, tuple]:
    node = layer._inbound_nodes[0]
    ins = node.input_tensors
    outs = node.output_tensors
    return _shape(ins), _shape(outs)


def layer_macc(layer: Any) -> int:
    """MACC of one (non-model) layer at the shapes it was built with; 0 for uncounted kinds."""
    from keras import layers as L

    counted = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D, L.SeparableConv1D,
               L.SeparableConv2D, L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose, L.Dense)
    if not isinstance(layer, counted) or not getattr(layer, "_inbound_nodes", None):
        return 0
    in_shape, out_shape = _io_shapes(layer)
    # Order matters: SeparableConv/DepthwiseConv are not Conv subclasses in Keras 3, but check first anyway.
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        positions = math.prod(out_shape[1:-1])
        cin = in_shape[-1]
        mult = layer.depth_multiplier
        k = math.prod(layer.kernel_size)
        return int(positions * cin * mult * k + positions * cin * mult * layer.filters)
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        positions = math.prod(out_shape[1:-1])
        return int(positions * out_shape[-1] * math.prod(layer.kernel_size))
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3DTranspose)):
        positions = math.prod(in_shape[1:-1])
        return int(positions * in_shape[-1] * layer.filters * math.prod(layer.kernel_size))
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        positions = math.prod(out_shape[1:-1])
        groups = getattr(layer, "groups", 1) or 1
        return int(positions * layer.filters * math.prod(layer.kernel_size) * in_shape[-1] // groups)
    if isinstance(layer, L.Dense):
        return int(math.prod(in_shape[1:-1]) * in_shape[-1] * layer.units)
    return 0


def _walk(model: Any, trainable: bool):
    for layer in model.layers:
        t = trainable and layer.trainable
        if hasattr(layer, "layers") and layer.layers:
            yield from _walk(layer, t)
        else:
            yield layer, t


def count_macc(model: Any, trained_only: bool = False) -> int:
    """Total MACC of ``model`` for one image; ``trained_only``: layers that training updates."""
    total = 0
    for layer, trainable in _walk(model, model.trainable):
        if trained_only and not (trainable and layer.trainable_weights):
            continue
        total += layer_macc(layer)
    return int(total)


def count_params(model: Any) -> ParamCounts:
    """``{"total", "trainable"}`` parameter counts (trainable respects frozen nested models)."""
    import numpy as np

    total = int(sum(np.prod(w.shape) for w in model.weights))
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return ParamCounts(total=total, trainable=trainable)


def approach_costs(models: Iterable[Any]) -> dict[str, Any]:
    """``{"params": {"total", "trainable"}, "macc": {"total", "trained"}}`` summed over ``models``
    (the files of one approach: separate has one per head)."""
    params, macc = ParamCounts(total=0, trainable=0), MaccCounts(total=0, trained=0)
    for m in models:
        counted = count_params(m)
        params["total"] += counted["total"]
        params["trainable"] += counted["trainable"]
        macc["total"] += count_macc(m)
        macc["trained"] += count_macc(m, trained_only=True)
    return {"params": params, "macc": macc}
