"""Every converted polyhead file runs in MediaPipe Tasks' ``ImageClassifier`` with one classification
list per head, and its scores are polyhead-edge's.

The files are made here (host env: tiny Keras models through ``convert_run``, every approach at
float32 and int8); MediaPipe runs in ``.venv-mediapipe`` as a subprocess
(tests/metadata_mediapipe_worker.py), like the tflite-runtime 2.14 tests drive ``.venv-legacy``.
Both sides get identical pixels (``edge.runtime.preprocess.load_image``): MediaPipe's own resize is not
Pillow's, and this test is about the metadata, not about resampling.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from convert_fixtures import make_dataset, make_run

REPO = Path(__file__).resolve().parents[1]
MEDIAPIPE_PYTHON_ENV = "POLYHEAD_MEDIAPIPE_PYTHON"
MAX_RESULTS = 3
PRECISIONS = ("float32", "int8")  # what `make all` writes; float16 and dynamic pass too (slower test)


def mediapipe_python() -> str | None:
    """``$POLYHEAD_MEDIAPIPE_PYTHON``, else ``<repo>/.venv-mediapipe/bin/python`` if it exists."""
    given = os.environ.get(MEDIAPIPE_PYTHON_ENV)
    if given:
        return given
    candidate = REPO / ".venv-mediapipe" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


MEDIAPIPE = mediapipe_python()
# `make test` sets POLYHEAD_REQUIRE_MEDIAPIPE=1: there a missing MediaPipe env is a failure, not a skip.
if MEDIAPIPE is None and os.environ.get("POLYHEAD_REQUIRE_MEDIAPIPE") == "1":
    raise RuntimeError("POLYHEAD_REQUIRE_MEDIAPIPE=1 but there is no .venv-mediapipe (make setup-mediapipe)")
pytestmark = [
    pytest.mark.mediapipe,
    pytest.mark.skipif(MEDIAPIPE is None,
                       reason=f"no .venv-mediapipe (make setup-mediapipe) and {MEDIAPIPE_PYTHON_ENV} unset"),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A run converted at every precision (every approach), and test images of several sizes."""
    from PIL import Image

    from convert.run import convert_run

    base = tmp_path_factory.mktemp("mediapipe")
    data = make_dataset(base / "data", per_combo={"train": 3, "val": 1, "test": 1})
    run = make_run(base / "run", data, approaches=("multihead", "joint", "separate"))
    doc = convert_run(run, PRECISIONS, calibration=12, legacy=False)
    assert doc["errors"] == [], doc["errors"]
    images = sorted(data.glob("test_*.png"))[:4]
    rng = np.random.default_rng(0)
    for i, size in enumerate(((64, 48), (31, 45))):  # resized by load_image on both sides
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(base / f"noise{i}.jpg")
        images.append(base / f"noise{i}.jpg")
    return run, images


def _polyhead_scores(model_path: Path, images: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    from edge.runtime.model import Model
    from edge.runtime.preprocess import load_image

    model = Model(model_path)
    h, w = model.input_size
    return {str(p): model.run(load_image(p, h, w)) for p in images}


@pytest.mark.slow
def test_mediapipe_image_classifier_reads_every_file_as_polyhead_does(converted):
    from edge.contract.card_archive import read_card

    run, images = converted
    files = sorted((run / "edge").glob("*.tflite"))
    assert len(files) == 4 * len(PRECISIONS)  # (multihead, joint, separate.make, separate.type) x precisions
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([MEDIAPIPE, str(REPO / "tests" / "metadata_mediapipe_worker.py"), str(MAX_RESULTS),
                           *map(str, files), "--", *map(str, images)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["mediapipe"] == "1.2.3"
    for f in files:
        card = read_card(f)
        ours = _polyhead_scores(f, images)
        # int8: the same integer kernels, exactly; float inputs: the same pixels normalised, to 1e-5.
        tol = 0.0 if card.precision == "int8" else 1e-5
        for image in map(str, images):
            lists = result["models"][str(f)][image]
            # One classification list per card output (a head; ``joint`` for a joint file).
            assert sorted(c["head_name"] for c in lists) == sorted(card.outputs), (f.name, lists)
            assert [c["head_index"] for c in lists] == list(range(len(lists)))
            for c in lists:
                key, classes, scores = c["head_name"], card.output_classes(c["head_name"]), ours[image][c["head_name"]]
                cats = c["categories"]
                assert len(cats) == min(MAX_RESULTS, len(classes))
                for index, name, score in cats:
                    assert classes[index] == name, (f.name, key, index, name)
                    assert abs(score - float(scores[index])) <= tol, (f.name, key, name, score, scores[index])
                # Top-1 is polyhead's (on a tie, MediaPipe's pick is one of the tied classes).
                assert scores[cats[0][0]] >= scores.max() - tol, (f.name, key, cats, scores)
                assert [s for _, _, s in cats] == sorted((s for _, _, s in cats), reverse=True)
