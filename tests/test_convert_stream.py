"""The conversion's check streams its test split (issue #25): never decoded whole, read a bounded
batch at a time by every consumer, with the same figures as the whole split in memory."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from convert_fixtures import make_dataset, make_run  # noqa: E402
from env_checks import accept_unchecked_legacy  # noqa: E402

BATCH = 4
"""The check batch in these tests: far under the 18 test images, so every consumer must batch."""


@pytest.fixture
def dataset_with_a_bad_test_image(tmp_path):
    data = make_dataset(tmp_path / "data")
    (data / "test_bmw_suv_1.png").write_bytes(b"not an image")
    return data


def _small_batches(monkeypatch) -> list[int]:
    """Check batches of ``BATCH`` rows; returns the row count of every decode of test images (calibration
    images, from the train split, may be decoded at once), filled as they happen."""
    import convert.compat
    import convert.data
    import convert.runner
    from datasets.pipeline import StreamedImages

    for module in (convert.runner, convert.data, convert.compat):
        monkeypatch.setattr(module, "CHECK_BATCH", BATCH)
    decoded: list[int] = []
    decode = StreamedImages.decode

    def counted(self, index):
        out = decode(self, index)
        if self.paths[0].name.startswith("test_"):
            decoded.append(len(out[0]))
        return out

    monkeypatch.setattr(StreamedImages, "decode", counted)
    return decoded


def test_check_streams_the_test_split_with_the_in_memory_figures(tmp_path, dataset_with_a_bad_test_image,
                                                                 monkeypatch):
    import datasets.pipeline
    from artifacts.keras_io import load_model
    from convert.compat import legacy_python
    from convert.data import load_records, open_dataset
    from convert.run import convert_run
    from convert.runner import predict_outputs
    from edge.contract.schema import LabelSchema

    data = dataset_with_a_bad_test_image
    run = make_run(tmp_path / "run", data, approaches=("multihead",))
    # The reference: the whole test split in memory, as convert held it before.
    ds = open_dataset(data)
    whole = load_records(ds, ds.split("test"), "test", LabelSchema.load(run / "schema.json"), (32, 32))
    keras_probs = load_model(run / "models" / "multihead.keras").predict(whole.images.astype(np.float32), verbose=0)

    load_split = datasets.pipeline.load_split

    def refuse_the_test_split(ds, split, *a, **k):
        assert split != "test", "the check split was loaded whole"
        return load_split(ds, split, *a, **k)  # calibration (bounded) may be

    monkeypatch.setattr(datasets.pipeline, "load_split", refuse_the_test_split)
    decoded = _small_batches(monkeypatch)
    legacy = legacy_python() is not None
    if not legacy:
        accept_unchecked_legacy("test_convert_stream: the streamed tflite-runtime check")
    doc = convert_run(run, ["float32", "int8"], calibration=8, legacy=legacy)

    assert decoded and max(decoded) <= BATCH
    (bad, error), = whole.skipped
    assert [w for w in doc["warnings"] if "unreadable" in w] == [f"skipped unreadable image {bad}: {error}"]
    for precision in ("float32", "int8"):
        name = f"edge/multihead.{precision}.tflite"
        check = doc["files"][name]["check"]
        assert check["n"] == whole.n == 17
        _, outs, _ = predict_outputs(run / name, whole.images)
        for head, m in check["heads"].items():
            labels = whole.labels[head]
            assert m["keras_accuracy"] == round(float(np.mean(keras_probs[head].argmax(-1) == labels)), 6)
            assert m["accuracy"] == round(float(np.mean(outs[head].argmax(-1) == labels)), 6)
            assert m["max_prob_diff"] == round(float(np.max(np.abs(outs[head] - keras_probs[head]))), 6)
        compat = doc["files"][name]["runtime_compat"]["tflite-runtime"]
        if legacy:  # the pixels went to tflite-runtime through a pipe a batch at a time
            assert compat["status"] == "ok" and compat["check"]["n"] == 17, compat
    device = doc["variants"]["multihead.int8"]["check"]  # the variant as the device runs it (Predictor)
    assert device["n"] == 17 and device["heads"] == doc["files"]["edge/multihead.int8.tflite"]["check"]["heads"]


def test_an_image_that_breaks_during_the_check_stops_it(tmp_path):
    from convert.data import CheckImages, check_batches, open_dataset
    from convert.errors import ConvertError

    data = make_dataset(tmp_path / "data")
    ds = open_dataset(data)
    test = CheckImages(ds, data, ds.schema, "test", ds.split("test"), (), []).test((16, 16))
    assert test.n == 18 and len(test.images) == 18
    shutil.copy(data / "labels.csv", data / "test_fiat_sedan_0.png")  # no longer an image
    with pytest.raises(ConvertError, match="test_fiat_sedan_0.png.*could be read when the check began"):
        for _ in check_batches(test.images):
            pass
