"""The older runtime: the edge tests again under tflite-runtime 2.14 + numpy<2 (``.venv-legacy``) on the
.tflite files this env's TF 2.21 made, predictions that agree with ai-edge-litert, and the runtime
compatibility check convert runs (``convert.compat.run_legacy``) that tells when an op does not load there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401

from convert.compat import LEGACY_ENV, legacy_python, run_legacy

REPO = Path(__file__).resolve().parents[1]
LEGACY = legacy_python()
# CI sets POLYHEAD_REQUIRE_LEGACY=1: there a missing legacy env is a failure, not a skip.
if LEGACY is None and os.environ.get("POLYHEAD_REQUIRE_LEGACY") == "1":
    raise RuntimeError("POLYHEAD_REQUIRE_LEGACY=1 but there is no .venv-legacy (make setup-legacy)")
pytestmark = [
    pytest.mark.legacy,
    pytest.mark.skipif(LEGACY is None, reason="no .venv-legacy (make setup-legacy) and POLYHEAD_LEGACY_PYTHON unset"),
]
LEGACY_TESTS = ("tests/test_edge_runtime.py", "tests/test_edge_preprocess.py", "tests/test_edge_card.py",
                "tests/test_edge_fuzz.py", "tests/test_edge_cli.py")

PREDICT_ALL = """
import json, sys
import numpy as np
from edge.runtime.predict import Predictor
from edge.runtime.variants import discover
from edge.runtime.preprocess import load_image
models, images = sys.argv[1], sys.argv[2:]
out = {}
for vid, v in discover(models).items():
    p = Predictor(v)
    batch = np.stack([load_image(f, p.height, p.width) for f in images])
    out[vid] = {h: a.tolist() for h, a in p.predict_array(batch).items()}
    out["_runtime"] = p.runtime
print(json.dumps(out))
"""


def _env(edge_fx) -> dict[str, str]:
    return {**os.environ, "POLYHEAD_EDGE_FIXTURES": str(edge_fx), "PYTHONPATH": str(REPO),
            "POLYHEAD_EXPECT_RUNTIME": "tflite-runtime"}


@pytest.mark.slow
def test_edge_tests_pass_under_tflite_runtime_2_14(edge_fx):
    proc = subprocess.run([LEGACY, "-m", "pytest", *LEGACY_TESTS, "-q", "-x", "-p", "no:cacheprovider",
                           "-m", "not legacy and not slow"], cwd=REPO, env=_env(edge_fx), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-500:]


def test_predictions_agree_across_runtimes(edge_fx):
    images = sorted(str(p) for p in (edge_fx / "images").iterdir() if p.suffix in (".jpg", ".png"))
    results = {}
    for python in (sys.executable, LEGACY):
        proc = subprocess.run([python, "-c", PREDICT_ALL, str(edge_fx / "models"), *images], cwd=REPO,
                              env=_env(edge_fx), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[python] = json.loads(proc.stdout.strip().splitlines()[-1])
    new, old = results[sys.executable], results[LEGACY]
    assert new.pop("_runtime") == "ai-edge-litert" and old.pop("_runtime") == "tflite-runtime"
    assert sorted(new) == sorted(old) and len(new) == 5
    for vid in new:
        for head in new[vid]:
            a, b = np.array(new[vid][head]), np.array(old[vid][head])
            # Float kernels agree to rounding; int8 ones to within one output quantisation step (1/256).
            np.testing.assert_allclose(a, b, atol=1e-5 if "float32" in vid else 0.0040, err_msg=f"{vid} {head}")


def test_run_legacy_reports_what_loads(edge_fx, tmp_path, monkeypatch):
    from edge.contract.card_archive import read_card, strip_card, write_model

    good = edge_fx / "models" / "multihead.int8.tflite"
    # A model asking for an op version 2.14 lacks (CONV_2D v99, patched into the flatbuffer).
    flatbuffers = pytest.importorskip("flatbuffers")
    from ai_edge_litert import schema_py_generated as schema

    src = edge_fx / "models" / "multihead.float32.tflite"
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(strip_card(src.read_bytes()), 0))
    conv = [oc for oc in model.operatorCodes if oc.builtinCode == schema.BuiltinOperator.CONV_2D]
    conv[0].version = 99
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    patched = write_model(tmp_path / "v99.tflite", bytes(builder.Output()), read_card(src))
    spec = read_card(good).input  # the float32 and int8 fixtures share one input size
    images = np.zeros((2, spec.height, spec.width, 3), np.uint8)
    results = run_legacy([good, patched], images)
    ok, bad = results[good], results[patched]
    assert ok["runtime"] == "tflite-runtime 2.14.0" and ok["loads"] is True
    assert ok["missing_ops"] == [] and ok["error"] is None and ok["outputs"]
    assert bad["loads"] is False and bad["missing_ops"] == ["CONV_2D v99"] and bad["status"] == "fails"
    # No legacy Python: the answer says the check did not run.
    monkeypatch.setenv(LEGACY_ENV, str(tmp_path / "no-python"))
    missing = run_legacy([patched], images)[patched]
    assert missing["loads"] is None and missing["status"] == "unchecked"
