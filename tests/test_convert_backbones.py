"""Done-when of the conversion issue: every precision x every approach on a paper backbone
(squeezenet) and a mobile one (mobilenet_v2), random weights at 32 px; every file passes its check
against Keras and loads and agrees in tflite-runtime 2.14 (when .venv-legacy exists)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from convert_fixtures import make_dataset, make_run  # noqa: E402
from env_checks import accept_unchecked_legacy  # noqa: E402

BACKBONES = {
    "squeezenet": {},
    # Width 0.35 keeps the test quick; the ops and op versions are those of the full network.
    "mobilenet_v2": {"alpha": 0.35},
}
# Converting a MobileNetV2 takes ~6 s per file on 2 shared cores: its test covers the two
# single-model approaches; ``separate`` is the same graph with one head (covered on squeezenet,
# and by the full-width run recorded in the README).
APPROACHES = {
    "squeezenet": ("multihead", "joint", "separate"),
    "mobilenet_v2": ("multihead", "joint"),
}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_precision_every_approach(tmp_path, backbone):
    from convert.compat import legacy_python
    from convert.run import convert_run

    data = make_dataset(tmp_path / "data", per_combo={"train": 2, "val": 1, "test": 2})
    approaches = APPROACHES[backbone]
    run = make_run(tmp_path / "runs" / backbone, data, approaches=approaches, backbone=backbone,
                   backbone_kwargs=BACKBONES[backbone])
    doc = convert_run(run, calibration=8)
    assert doc["errors"] == []
    assert len(doc["variants"]) == 4 * len(approaches)
    assert len(doc["files"]) == 4 * (len(approaches) + ("separate" in approaches))
    want = "ok" if legacy_python() is not None else "unchecked"
    if want == "unchecked":
        accept_unchecked_legacy(f"test_every_precision_every_approach[{backbone}]")
    for name, e in doc["files"].items():
        assert e["passed"], (name, e["errors"])
        assert e["runtime_compat"]["tflite-runtime"]["status"] == want, (name, e["runtime_compat"])
        if e["precision"] in ("float32", "float16", "dynamic"):
            assert all(m["agreement"] == 1.0 for m in e["check"]["heads"].values()), name
