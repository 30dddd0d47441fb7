"""train/: registry, models, MACC, feature cache, runs (fast tests; slow ones in test_train_slow.py)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_arrays, write_folder  # noqa: E402

keras = pytest.importorskip("keras")

from artifacts.keras_io import load_model  # noqa: E402
from edge.contract.schema import Head, LabelSchema  # noqa: E402
from train.backbones import (  # noqa: E402
    BackboneError,
    WeightsError,
    create_backbone,
    list_backbones,
    load_weights_by_name,
    register_backbone,
)
from train.fit import TrainConfig, run_training, split_metrics  # noqa: E402
from train.macc import count_macc  # noqa: E402
from train.models import build_model, model_units  # noqa: E402
from train.records import train_key_errors  # noqa: E402

PAPER = ("alexnet", "googlenet", "squeezenet")
EDGE = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")


def _schema(n_heads: int = 2) -> LabelSchema:
    heads = tuple(Head(f"h{i}", tuple(f"c{j}" for j in range(2 + i))) for i in range(n_heads))
    combos = tuple(tuple(h.classes[k % len(h.classes)] for h in heads) for k in range(4))
    return LabelSchema(heads, tuple(sorted(set(combos))))


# -- registry ----------------------------------------------------------------------------------


def test_registry_lists_paper_and_edge_backbones():
    names = list_backbones()
    assert set(PAPER + EDGE + ("tiny_cnn",)) <= set(names)
    assert list_backbones("mobilenet*") == ["mobilenet_v2", "mobilenet_v2_035", "mobilenet_v3_small"]


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(BackboneError, match="Known backbones: alexnet, "):
        create_backbone("resnet9000")


def test_duplicate_registration_refused():
    with pytest.raises(BackboneError, match="registered twice"):

        @register_backbone
        def tiny_cnn(input_shape):  # noqa: F811 - the point of the test
            return None


def test_too_small_input_is_one_line_error():
    with pytest.raises(BackboneError, match="at least 63 px. Received: image_size=\\[32, 32\\]"):
        create_backbone("alexnet", (32, 32, 3))


def test_imagenet_missing_offline_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name, file in [("mobilenet_v2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"),
                       ("squeezenet", "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"),
                       ("efficientnet_b0", "efficientnetb0_notop.h5")]:
        with pytest.raises(WeightsError) as e:
            create_backbone(name, (96, 96, 3), weights="imagenet")
        msg = str(e.value)
        assert "\n" not in msg and file in msg and str(tmp_path / "models") in msg


def test_weights_path_loads_by_layer_name(tmp_path):
    keras.utils.set_random_seed(1)
    src = create_backbone("tiny_cnn", (32, 32, 3))
    path = tmp_path / "tiny.h5"
    src.save(str(path))  # legacy .h5: layer_names + weight_names, what keras-era files look like
    keras.utils.set_random_seed(2)
    dst = create_backbone("tiny_cnn", (32, 32, 3), weights=str(path))
    for a, b in zip(src.get_weights(), dst.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)
    assert dst.polyhead_weights["loaded"] == 8 and dst.polyhead_weights["sha256"]


def test_squeezenet_keras_squeezenet_names_and_bgr_flip(tmp_path, monkeypatch):
    """A file laid out like keras-squeezenet's ('fire2/squeeze1x1', BGR conv1) loads by name."""
    import h5py

    model = create_backbone("squeezenet", (48, 48, 3))
    rng = np.random.default_rng(0)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
    expected = {}
    with h5py.File(path, "w") as f:
        names = []
        for layer in model.layers:
            if not layer.weights:
                continue
            rc = layer.name.replace("fire", "fire").replace("_squeeze", "/squeeze").replace("_expand", "/expand")
            rc = rc.replace("_relu", "/relu")
            names.append(rc.encode())
            g = f.create_group(rc)
            wn = [f"{rc}/kernel:0".encode(), f"{rc}/bias:0".encode()]
            g.attrs["weight_names"] = wn
            vals = [rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()]
            for n, v in zip(wn, vals, strict=False):
                g.create_dataset(n.decode(), data=v)
            expected[layer.name] = vals
        f.attrs["layer_names"] = names
    assert b"fire2/squeeze1x1" in names
    loaded = create_backbone("squeezenet", (48, 48, 3), weights="imagenet")
    assert loaded.polyhead_weights["loaded"] == len(expected) and not loaded.polyhead_weights["skipped"]
    np.testing.assert_array_equal(loaded.get_layer("fire9_expand3x3").get_weights()[0],
                                  expected["fire9_expand3x3"][0])
    # conv1 input channels reversed: the file expects BGR, our model takes RGB.
    np.testing.assert_array_equal(loaded.get_layer("conv1").get_weights()[0], expected["conv1"][0][:, :, ::-1, :])


def test_load_weights_skips_mismatched_shapes(tmp_path):
    src = create_backbone("tiny_cnn", (32, 32, 3), width=8)
    path = tmp_path / "w8.h5"
    src.save(str(path))
    dst = create_backbone("tiny_cnn", (32, 32, 3), width=16)
    loaded, skipped = load_weights_by_name(dst, path)
    assert not loaded and skipped and "shapes" in skipped[0]


# -- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_heads", [1, 2, 3])
def test_three_approaches_any_number_of_heads(n_heads, tmp_path):
    schema = _schema(n_heads)
    x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("float32")
    for approach in ("multihead", "joint", "separate"):
        models = build_model(approach, "tiny_cnn", schema, (32, 32))
        assert list(models) == [u.name for u in model_units(approach, schema)]
        for name, m in models.items():
            assert m.input.name == "image" or m.inputs[0].name.startswith("image")
            out = m(x)
            assert isinstance(out, dict)
            want = {"joint": schema.num_combinations} if approach == "joint" else {
                h.name: h.num_classes for h in schema.heads if approach == "multihead" or name.endswith(h.name)}
            assert {k: v.shape[-1] for k, v in out.items()} == want
            for v in out.values():
                np.testing.assert_allclose(np.sum(np.asarray(v), axis=-1), 1.0, rtol=1e-5)
            assert not any(isinstance(layer, keras.layers.Lambda)
                           for layer in m._flatten_layers(include_self=False, recursive=True))
            path = tmp_path / f"{name}.keras"
            m.save(str(path))
            back = load_model(path)
            for k, v in back(x).items():
                np.testing.assert_allclose(np.asarray(v), np.asarray(out[k]), atol=1e-6)


def test_load_model_refuses_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(Exception, match="bad.keras: cannot load model") as e:
        load_model(bad)
    assert "\n" not in str(e.value)


# -- MACC --------------------------------------------------------------------------------------


def test_macc_hand_counted_layers():
    L = keras.layers
    inp = keras.Input((16, 16, 8))
    x = L.Conv2D(16, 3, padding="same")(inp)  # 16*16*16*9*8 = 294912
    x = L.Conv2D(16, 3, padding="same", groups=4)(x)  # 16*16*16*9*4 = 147456
    x = L.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 8*8*16*9 = 9216
    x = L.SeparableConv2D(32, 3, padding="same")(x)  # 8*8*16*9 + 8*8*16*32 = 9216 + 32768
    x = L.BatchNormalization()(x)
    x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    inner = keras.Model(inp, x)
    outer_in = keras.Input((16, 16, 8))
    y = L.Dense(10)(inner(outer_in))  # 32*10 = 320
    model = keras.Model(outer_in, y)
    expected = 294912 + 147456 + 9216 + 9216 + 32768 + 320
    assert count_macc(model) == expected
    inner.trainable = False
    assert count_macc(model, trained_only=True) == 320


def test_trained_macc_of_frozen_base_is_heads_only():
    schema = _schema(2)
    m = build_model("multihead", "tiny_cnn", schema, (32, 32), freeze_base=True)["multihead"]
    feats = m.get_layer("backbone").output.shape[-1]
    assert count_macc(m, trained_only=True) == feats * sum(h.num_classes for h in schema.heads)
    assert count_macc(m) > count_macc(m, trained_only=True)


PUBLISHED = {
    # backbone: (published MACC of the ImageNet classifier at 224, MACC of its classifier which the
    # backbone ends before; the backbone must match published - classifier within 5 %)
    "mobilenet_v2": (300e6, 1280 * 1000),
    "squeezenet": (350e6, 13 * 13 * 512 * 1000),  # conv10: 1x1 conv at 13x13
    "alexnet": (720e6, 4096 * 1000),  # fc8 (fc6, fc7 are features)
    "googlenet": (1.5e9, 1024 * 1000),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macc_matches_published_figures(name):
    published, classifier = PUBLISHED[name]
    got = count_macc(create_backbone(name, (224, 224, 3))) + classifier
    assert abs(got - published) / published < 0.05, f"{name}: {got / 1e6:.1f} M vs {published / 1e6:.0f} M"


# -- metrics -----------------------------------------------------------------------------------


def test_split_metrics_joint_accuracy_is_every_head_right():
    from train.data import Arrays

    schema = LabelSchema((Head("a", ("0", "1")), Head("b", ("x", "y", "z"))), (("0", "x"), ("1", "y")))
    arr = Arrays(np.zeros((3, 1, 1, 3), np.uint8), {"a": np.array([0, 1, 1]), "b": np.array([0, 1, 2])},
                 np.array([0, 1, -1]))
    probs = {"a": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]),
             "b": np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8]])}
    m = split_metrics(schema, probs, arr)
    assert m["n"] == 3
    assert m["heads"]["a"]["accuracy"] == pytest.approx(2 / 3)
    assert m["heads"]["b"]["accuracy"] == pytest.approx(2 / 3)
    assert m["joint_accuracy"] == pytest.approx(1 / 3)
    assert m["heads"]["b"]["top5"] == 1.0
    assert m["heads"]["a"]["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4])), rel=1e-5)


# -- feature cache -----------------------------------------------------------------------------


def test_feature_cache_trains_the_same_model_as_the_frozen_full_model():
    from train.bench import feature_cache_speedup

    r = feature_cache_speedup("tiny_cnn", image_size=32, n_images=48, epochs=2, batch_size=16)
    assert r["max_head_weight_diff"] < 1e-4, r


# -- runs --------------------------------------------------------------------------------------


def _cfg(tmp_path, **kw) -> TrainConfig:
    # Explicit protocol: these tests pin the from-scratch path whatever train/defaults.py says.
    base = dict(data="mem", out=str(tmp_path / "run"), backbone="tiny_cnn", image_size=(32, 32), batch_size=16,
                epochs=2, learning_rate=3e-3, verbose=0, weights="none", freeze_base=False, warmup_epochs=0,
                fine_tune_learning_rate=None, compose="none")  # plain heads: tests/test_compose.py covers the rest
    base.update(kw)
    return TrainConfig(**base)


def test_run_folder_and_train_json_contract(tmp_path):
    schema, data = make_arrays(n=64)
    cfg = _cfg(tmp_path)
    rec = run_training(cfg, data, schema)
    run = Path(cfg.out)
    on_disk = json.loads((run / "train.json").read_text())
    assert on_disk == json.loads(json.dumps(rec))
    assert train_key_errors(on_disk) == []  # every key the writer wrote is one train.records names
    renamed = json.loads(json.dumps(rec))  # a renamed key is named, at any depth
    renamed["budget"]["lr"] = renamed["budget"].pop("learning_rate")
    renamed["variants"]["joint"]["macs"] = renamed["variants"]["joint"].pop("macc")
    renamed["variants"]["joint"]["metrics"]["test"]["heads"]["make"]["acc"] = \
        renamed["variants"]["joint"]["metrics"]["test"]["heads"]["make"].pop("accuracy")
    assert train_key_errors(renamed) == [
        "train.json budget: missing key 'learning_rate'", "train.json budget: unknown key 'lr'",
        "variant joint: missing key 'macc'", "variant joint: unknown key 'macs'",
        "variant joint test head 'make': missing key 'accuracy'", "variant joint test head 'make': unknown key 'acc'"]
    assert set(rec["versions"]) >= {"tensorflow", "keras", "numpy", "python", "platform"}
    assert rec["backbone"] == "tiny_cnn" and rec["image_size"] == [32, 32] and rec["weights"] == "none"
    assert list(rec["variants"]) == ["multihead", "joint", "separate"]
    sep = rec["variants"]["separate"]
    assert sep["files"] == ["models/separate.make.keras", "models/separate.type.keras"]
    for name, v in rec["variants"].items():
        assert v["approach"] == name and v["epochs"] == 2 and v["train_wall_s"] > 0
        assert v["params"]["total"] >= v["params"]["trainable"] > 0
        assert v["macc"]["total"] >= v["macc"]["trained"] > 0 and v["keras_bytes"] > 0
        assert set(v["metrics"]) == {"val", "test", "test_unseen"}
        for split, m in v["metrics"].items():
            assert m["n"] == data[split].n and set(m["heads"]) == {"make", "type"}
            assert set(m["heads"]["make"]) == {"accuracy", "loss", "top5", "n"}
            assert m["heads"]["make"]["n"] == data[split].n  # every row labelled
        for f in v["files"]:
            load_model(run / f)
    assert sep["params"]["total"] > rec["variants"]["multihead"]["params"]["total"]
    assert LabelSchema.load(run / "schema.json") == schema
    assert TrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg
    for name in ("multihead", "joint", "separate.make", "separate.type"):
        rows = list(csv.DictReader(open(run / "logs" / f"{name}.csv")))
        assert [r["epoch"] for r in rows] == ["1", "2"] and "loss" in rows[0]
        assert sorted(p.name for p in (run / "checkpoints" / name).glob("epoch-*.keras")) == [
            "epoch-0001.keras", "epoch-0002.keras"]
    assert not list(run.rglob("*.tmp*"))


def test_same_seed_same_metrics(tmp_path):
    schema, data = make_arrays(n=48)
    a = run_training(_cfg(tmp_path / "a", approaches=("multihead",)), data, schema)
    b = run_training(_cfg(tmp_path / "b", approaches=("multihead",)), data, schema)
    ma, mb = a["variants"]["multihead"]["metrics"]["test"], b["variants"]["multihead"]["metrics"]["test"]
    assert ma["heads"]["make"]["accuracy"] == mb["heads"]["make"]["accuracy"]
    assert ma["heads"]["make"]["loss"] == pytest.approx(mb["heads"]["make"]["loss"], abs=1e-4)


def test_freeze_base_run_trains_heads_only(tmp_path):
    schema, data = make_arrays(n=48)
    rec = run_training(_cfg(tmp_path, approaches=("multihead", "separate"), freeze_base=True), data, schema)
    v = rec["variants"]["multihead"]
    assert v["macc"]["trained"] == 64 * (3 + 3)  # tiny_cnn features (64) x classes
    assert v["params"]["trainable"] == 64 * 6 + 6
    # one backbone pass over train (+val) for all three models: only the first extracts.
    assert rec["variants"]["separate"]["feature_extract_s"] == 0.0
    assert rec["mode"] == "freeze_base"


def test_frozen_base_passes_each_image_through_the_backbone_once(tmp_path):
    from train.fit import predict_probs

    schema, data = make_arrays(n=48)
    rec = run_training(_cfg(tmp_path, freeze_base=True), data, schema)
    total = sum(a.n for a in data.values())
    # train + val + test + test_unseen once, for all three approaches (four models) together.
    assert rec["feature_extraction"] == {"backbone_image_passes": total, "images": total,
                                         "shared_by_approaches": True}
    # Metrics computed from cached features equal the saved model run on the images.
    model = load_model(Path(tmp_path / "run" / "models" / "joint.keras"))
    probs = schema.head_probs(predict_probs(model, data["test_unseen"].images, 16))
    got = split_metrics(schema, probs, data["test_unseen"])
    want = rec["variants"]["joint"]["metrics"]["test_unseen"]
    assert got["joint_accuracy"] == want["joint_accuracy"]
    assert got["heads"]["make"]["loss"] == pytest.approx(want["heads"]["make"]["loss"], abs=1e-5)


def test_fine_tune_keeps_batchnorm_statistics_and_trains_the_rest(tmp_path):
    schema, data = make_arrays(n=48)
    cfg = _cfg(tmp_path, approaches=("multihead",), warmup_epochs=1, fine_tune_learning_rate=1e-3, freeze_bn=True)
    run_training(cfg, data, schema)
    start = build_model("multihead", "tiny_cnn", schema, (32, 32))["multihead"].get_layer("backbone")
    end = load_model(Path(cfg.out) / "models" / "multihead.keras").get_layer("backbone")
    for name in ("conv1_bn", "conv4_bn"):
        for a, b in zip(start.get_layer(name).get_weights(), end.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)  # gamma, beta, moving mean and variance untouched
    assert not np.allclose(start.get_layer("conv2").get_weights()[0], end.get_layer("conv2").get_weights()[0])
    rows = list(csv.DictReader(open(Path(cfg.out) / "logs" / "multihead.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_bn_frozen_by_default_only_when_fine_tuning_pretrained_weights():
    assert TrainConfig("d", "o", weights="imagenet", freeze_base=False).use_freeze_bn
    assert not TrainConfig("d", "o", weights="none", freeze_base=False).use_freeze_bn
    assert not TrainConfig("d", "o", weights="imagenet", freeze_base=False, freeze_bn=False).use_freeze_bn


def test_resume_skips_finished_models(tmp_path):
    schema, data = make_arrays(n=32)
    cfg = _cfg(tmp_path, approaches=("multihead",), epochs=1)
    run_training(cfg, data, schema)
    model = Path(cfg.out) / "models" / "multihead.keras"
    stamp = model.stat().st_mtime_ns
    run_training(cfg, data, schema)
    assert model.stat().st_mtime_ns == stamp


def test_config_mismatch_on_existing_run_is_refused(tmp_path):
    from train.fit import TrainError

    schema, data = make_arrays(n=32)
    run_training(_cfg(tmp_path, approaches=("multihead",), epochs=1), data, schema)
    with pytest.raises(TrainError, match="different seed=0"):
        run_training(_cfg(tmp_path, approaches=("multihead",), epochs=1, seed=3), data, schema)


# -- CLI ---------------------------------------------------------------------------------------


def test_cli_trains_from_a_folder_with_config_file(tmp_path):
    from click.testing import CliRunner

    from train.__main__ import main

    data = write_folder(tmp_path / "data", n=40, size=32)
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"backbone": "tiny_cnn", "epochs": 5, "batch_size": 8, "image_size": 32}))
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["--data", str(data), "--out", str(out), "--config", str(conf),
                                  "--approach", "multihead", "--epochs", "1", "--head-weights", "make=1,type=0.5",
                                  "--protocol", "scratch",
                                  "--verbose", "0"])
    assert r.exit_code == 0, r.output
    assert train_key_errors(json.loads((out / "train.json").read_text())) == []  # with the dataset's counts
    saved = json.loads((out / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 8 and saved["head_weights"] == {"make": 1.0, "type": 0.5}
    assert "multihead" in r.output and "joint acc" in r.output


def test_cli_errors_are_one_line(tmp_path):
    from click.testing import CliRunner

    from train.__main__ import main

    data = write_folder(tmp_path / "data", n=16, size=32)
    r = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path / "r"), "--backbone", "nope"])
    assert r.exit_code == 1 and "Error: unknown backbone 'nope'. Known backbones:" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main, ["--data", str(data), "--out", str(tmp_path / "r"), "--backbone", "mobilenet_v2",
                                  "--weights", "imagenet", "--image-size", "96"],
                           env={"KERAS_HOME": str(tmp_path / "kh")})
    assert r.exit_code == 1 and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in r.output
    assert len(r.output.strip().splitlines()) == 1
    # --resume over a damaged config.json: one line naming the file, not a JSONDecodeError traceback
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    r = CliRunner().invoke(main, ["--out", str(tmp_path / "broken"), "--resume"])
    assert r.exit_code == 1 and "config.json: cannot read config" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_cli_profile(tmp_path):
    from click.testing import CliRunner

    from train.__main__ import main

    data = write_folder(tmp_path / "data", n=16, size=32)
    r = CliRunner().invoke(main, ["profile", "--backbone", "tiny_cnn", "--data", str(data), "--image-size", "32",
                                  "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.strip().splitlines()]
    assert [x["approach"] for x in rows] == ["multihead", "joint", "separate"]
    assert rows[2]["files"] == 2 and rows[0]["macc"]["trained"] < rows[0]["macc"]["total"]


# -- labels.csv paths outside the dataset folder -----------------------------------------------


def _outside_folder(tmp_path: Path, n: int = 40) -> Path:
    """``ds/labels.csv`` whose image paths are ``../outside/images/NNNN.png`` (real PNGs)."""
    write_folder(tmp_path / "outside", n=n, size=32)
    ds = tmp_path / "ds"
    ds.mkdir()
    text = (tmp_path / "outside" / "labels.csv").read_text()
    (ds / "labels.csv").write_text(text.replace("images/", "../outside/images/"))
    return ds


def test_cli_refuses_outside_paths_in_one_line_and_trains_with_the_flag(tmp_path):
    from click.testing import CliRunner

    from convert.cli import main as convert_main
    from train.__main__ import main

    ds = _outside_folder(tmp_path)
    out = tmp_path / "run"
    common = ["--data", str(ds), "--out", str(out), "--backbone", "tiny_cnn", "--image-size", "32",
              "--epochs", "1", "--batch-size", "8", "--approach", "multihead", "--verbose", "0", "--protocol", "scratch"]
    r = CliRunner().invoke(main, common)
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "row 2: image path '../outside/images/0000.png' leaves the dataset folder" in r.output
    assert "--allow-outside-paths" in r.output
    r = CliRunner().invoke(main, ["profile", "--backbone", "tiny_cnn", "--data", str(ds), "--image-size", "32"])
    assert r.exit_code == 1 and "../outside/images/0000.png" in r.output

    r = CliRunner().invoke(main, [*common, "--allow-outside-paths"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["allow_outside_paths"] is True
    assert (out / "models" / "multihead.keras").is_file()

    # convert honours the run's config.json: no flag needed; --no-allow-outside-paths refuses
    r = CliRunner().invoke(convert_main, [str(out), "--precision", "float32", "--check-images", "4", "--no-legacy"])
    assert r.exit_code == 0, r.output
    assert (out / "edge" / "multihead.float32.tflite").is_file()
    r = CliRunner().invoke(convert_main, [str(out), "--precision", "float32", "--check-images", "4", "--no-legacy",
                                          "--force", "--no-allow-outside-paths"])
    assert r.exit_code == 1 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "'../outside/images/0000.png' leaves the dataset folder" in r.output


def test_resume_keeps_allow_outside_paths_and_older_configs_default_to_false(tmp_path):
    from train.__main__ import resolve_config
    from train.fit import CONFIG_FILE, _check_resume

    run = tmp_path / "run"
    run.mkdir()
    saved = TrainConfig(data="d", out=str(run), backbone="tiny_cnn", allow_outside_paths=True).to_dict()
    (run / CONFIG_FILE).write_text(json.dumps(saved))
    assert resolve_config(None, True, None, {"out": str(run)}).allow_outside_paths is True
    assert resolve_config(None, True, None, {"out": str(run), "allow_outside_paths": False}).allow_outside_paths is False
    # a config.json written before the setting existed: False, and not a mismatch on resume
    del saved["allow_outside_paths"]
    (run / CONFIG_FILE).write_text(json.dumps(saved))
    (run / "models").mkdir()
    (run / "models" / "multihead.keras").write_bytes(b"x")
    cfg = resolve_config(None, True, None, {"out": str(run)})
    assert cfg.allow_outside_paths is False
    _check_resume(run, cfg)
    _check_resume(run, TrainConfig.from_dict({**saved, "allow_outside_paths": True}))
