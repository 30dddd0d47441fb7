"""The three approaches, built from one backbone and one label schema (any number of heads).

- ``multihead``: one backbone, one Dense softmax head per schema head; dict outputs keyed by head.
- ``joint``: one backbone, one Dense softmax head over ``schema.combinations``; output ``joint``.
- ``separate``: one single-head model per schema head (``separate.<head>``), each its own backbone.

Every model has one input ``image`` (H, W, 3) float32 RGB 0..255 and its backbone as a nested
model named ``backbone``; heads are Dense layers named by their output. Head initialisers are
seeded from (seed, output name) so a head starts identical however the backbone was built; the
feature cache relies on this.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from artifacts.keras_io import KerasModelError
from edge.contract.approaches import APPROACH_SPECS, APPROACHES, output_size
from edge.contract.schema import LabelSchema

BACKBONE_LAYER = "backbone"


@dataclass(frozen=True)
class ModelUnit:
    """One trainable Keras model of a variant: ``multihead``, ``joint`` or ``separate.<head>``."""

    variant: str
    name: str
    outputs: tuple[str, ...]


def model_units(approach: str, schema: LabelSchema) -> tuple[ModelUnit, ...]:
    """The models an approach needs (``edge.contract.approaches``: separate is one per head)."""
    spec = APPROACH_SPECS.get(approach)
    if spec is None:
        raise KerasModelError(f"unknown approach. Known: {list(APPROACHES)}. Received: approach={approach!r}")
    return tuple(ModelUnit(approach, u.stem, u.outputs) for u in spec.units(schema))


def _head_seed(seed: int, output: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(output.encode())) % (2**31 - 1)


def make_head(output: str, num_classes: int, seed: int = 0) -> Any:
    """The Dense softmax layer of one output (named by it), seeded initialisers."""
    import keras

    return keras.layers.Dense(
        num_classes,
        activation="softmax",
        name=output,
        kernel_initializer=keras.initializers.GlorotUniform(seed=_head_seed(seed, output)),
        bias_initializer="zeros",
    )


def build_unit(
    unit: ModelUnit,
    backbone: str,
    schema: LabelSchema,
    image_size: Sequence[int],
    weights: str = "none",
    seed: int = 0,
    freeze_base: bool = False,
    backbone_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Build one model of ``unit``: Input ``image`` -> backbone -> one Dense softmax per output."""
    import keras

    from train.backbones import create_backbone

    h, w = int(image_size[0]), int(image_size[1])
    # Same seed before every backbone: all models of a run start from the same backbone weights
    # (so the feature cache can be shared and the approaches compare fairly).
    keras.utils.set_random_seed(int(seed))
    base = create_backbone(backbone, (h, w, 3), weights=weights, **(backbone_kwargs or {}))
    weights_info = getattr(base, "polyhead_weights", None)
    base = keras.Model(base.inputs[0], base.outputs[0], name=BACKBONE_LAYER)
    base.trainable = not freeze_base
    inp = keras.Input((h, w, 3), name="image", dtype="float32")
    feats = base(inp)
    outputs = {o: make_head(o, output_size(schema, o), seed)(feats) for o in unit.outputs}
    model = keras.Model(inp, outputs, name=unit.name.replace(".", "_"))
    model.polyhead_weights = weights_info
    return model


def build_model(
    approach: str, backbone: str, schema: LabelSchema, image_size: Sequence[int], **kwargs: Any
) -> dict[str, Any]:
    """Build every model of ``approach``: ``{model name: keras.Model}``; ``kwargs`` as ``build_unit``.

    ``multihead`` -> ``{"multihead": m}``, ``joint`` -> ``{"joint": m}``, ``separate`` ->
    ``{"separate.make": m, "separate.type": m, ...}``. Outputs are dicts keyed by output name.
    """
    return {u.name: build_unit(u, backbone, schema, image_size, **kwargs) for u in model_units(approach, schema)}


def heads_model(model: Any) -> Any:
    """A model from pooled features to ``model``'s heads, *sharing* its Dense layers.

    Training it trains the full model's heads (used by the feature cache).
    """
    import keras

    base = model.get_layer(BACKBONE_LAYER)
    feat_dim = int(base.output.shape[-1])
    inp = keras.Input((feat_dim,), name="features")
    return keras.Model(inp, {n: model.get_layer(n)(inp) for n in output_names(model)}, name=f"{model.name}_heads")


def output_names(model: Any) -> list[str]:
    """Output names of a polyhead model (its dict keys)."""
    out = model.output
    if isinstance(out, dict):
        return list(out.keys())
    return list(model.output_names)
