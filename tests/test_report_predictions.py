"""predictions.json from a real (tiny) multihead .tflite, and the report drawing from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # converts a tiny Keras model with TensorFlow (~10 s)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import edge_fixtures as ef

    from edge.contract.card_archive import write_model

    root = tmp_path_factory.mktemp("pred")
    run, data = root / "run", root / "data"
    model = ef._tiny_keras({"make": len(ef.MAKES), "type": len(ef.TYPES)}, seed=1)
    tfl = ef.convert(model, int8=False)
    card = ef.card_for("multihead", "multihead", ef.HEADS, {"make": "make", "type": "type"},
                       ef.input_spec(tfl), "float32")
    write_model(run / "edge" / "multihead.float32.tflite", tfl, card)
    ef.make_images(data, n=8)
    # Predictions read the dataset through the datasets stage, which wants train and val rows too.
    with open(data / "labels.csv", "a") as f:
        for i, split in enumerate(["train", "train", "val"]):
            shutil.copy(data / "img0.jpg", data / f"{split}{i}.jpg")
            f.write(f"{split}{i}.jpg,{split},{ef.MAKES[i % len(ef.MAKES)]},{ef.TYPES[i % len(ef.TYPES)]}\n")
    return run, data


def test_predictions_json_counts_every_test_image(tiny_run: tuple[Path, Path]) -> None:
    from report.predictions import write_predictions

    run, data = tiny_run
    doc = json.loads(write_predictions(run, data).read_text())
    assert doc["variant"] == "multihead.float32" and doc["n"] == 8 and doc["errors"] == 0
    for head in ("make", "type"):
        matrix = doc["heads"][head]["confusion"]
        assert sum(map(sum, matrix)) == 8
        assert len(matrix) == len(doc["heads"][head]["classes"])
    assert (run / doc["grid"]).read_bytes()[:4] == b"\x89PNG"
    assert len(doc["samples"]) == 8


def test_report_draws_confusion_and_links_grid(tiny_run: tuple[Path, Path]) -> None:
    from report.predictions import write_predictions
    from report.render.build import write_report

    run, data = tiny_run
    write_predictions(run, data)
    (run / "config.json").write_text(json.dumps({"backbone": "tiny", "data": str(data)}))
    text = write_report([run]).read_text()
    assert "](plots/confusion_make.png)" in text and "](plots/predictions_grid.png)" in text
    assert (run / "plots" / "confusion_type.png").exists()


def test_no_multihead_model_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from report.predictions import main

    (tmp_path / "edge").mkdir()
    result = CliRunner().invoke(main, [str(tmp_path), "--data", str(tmp_path)])
    assert result.exit_code != 0 and "no .tflite" in result.output and "Traceback" not in result.output


def test_confusion_matrix_equals_a_hand_count(tiny_run: tuple[Path, Path]) -> None:
    """Rows are the true class, columns the predicted one: recount it from the per-image samples
    (all 8 test images are samples) and compare cell by cell, so a transposed matrix fails."""
    from report.predictions import write_predictions

    run, data = tiny_run
    doc = json.loads(write_predictions(run, data).read_text())
    assert len(doc["samples"]) == doc["n"] == 8
    asymmetric = False
    for head, entry in doc["heads"].items():
        classes = entry["classes"]
        expected = [[0] * len(classes) for _ in classes]
        for sample in doc["samples"]:
            expected[classes.index(sample["true"][head])][classes.index(sample["pred"][head])] += 1
        assert entry["confusion"] == expected, head
        hits = sum(1 for s in doc["samples"] if s["true"][head] == s["pred"][head])
        assert entry["accuracy"] == pytest.approx(hits / 8)
        asymmetric |= expected != [list(col) for col in zip(*expected, strict=True)]
    assert asymmetric, "the fixture must give a non-symmetric matrix, or a transposed one would pass"
