"""The guard against a runtime's known crash (edge/safety/runtime_faults.py), on real converted files.

The crash itself happens only on ARM: tests/pi/test_pi.py runs it there (the raw interpreter dies
with SIGSEGV, the edge CLI gives one line). Here: which layers trip the rule, and that ``Model``
refuses before the interpreter is built, naming the file.
"""

from __future__ import annotations

import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401

from edge.errors import ModelError
from edge.runtime.model import Model
from edge.safety.modelcheck import check_model, check_model_file
from edge.safety.runtime_faults import DenseLayer, known_crash


class TfliteRuntimeInterpreter:
    """Stands for tflite_runtime's Interpreter class; never gets to run."""

    def __init__(self, **kwargs):
        raise AssertionError("the guard must refuse before any interpreter is built")


TfliteRuntimeInterpreter.__module__ = "tflite_runtime.interpreter"


def test_dense_layers_of_a_tf_default_int8_file(edge_fx):
    """TF's default int8 conversion quantises dense weights per channel: the fixture's 4-class make
    and 3-class type heads over 8 pooled features."""
    dense = check_model_file(edge_fx / "models" / "multihead.int8.tflite").dense
    assert sorted((d.outputs, d.inputs, d.int8_per_channel) for d in dense) == [(3, 8, True), (4, 8, True)]
    assert all(not d.int8_per_channel for d in check_model_file(edge_fx / "models" / "multihead.float32.tflite").dense)


def test_polyhead_converts_dense_layers_per_tensor():
    """What polyhead's converter writes (per-tensor dense weights) does not trip the rule."""
    from edge_fixtures import _tiny_keras, convert

    from convert.tflite import DENSE_PER_CHANNEL

    data = convert(_tiny_keras({"type": 3}, seed=0), True, dense_per_channel=DENSE_PER_CHANNEL)
    dense = check_model(data).dense
    assert [(d.outputs, d.int8_per_channel) for d in dense] == [(3, False)]
    assert known_crash(dense, "tflite-runtime", "2.14.0", "aarch64") is None


@pytest.mark.parametrize("layer, runtime, machine, crashes", [
    (DenseLayer(5, 3, 1280, True), "tflite-runtime", "aarch64", True),  # a 3-class head
    (DenseLayer(5, 4, 7, True), "tflite-runtime", "armv7l", True),  # too few inputs
    (DenseLayer(5, 4, 8, True), "tflite-runtime", "armv7l", False),  # measured: runs
    (DenseLayer(5, 3, 1280, False), "tflite-runtime", "aarch64", False),  # per tensor
    (DenseLayer(5, 3, 1280, True), "tflite-runtime", "x86_64", False),
    (DenseLayer(5, 3, 1280, True), "ai-edge-litert", "aarch64", False),
])
def test_known_crash_rule(layer, runtime, machine, crashes):
    reason = known_crash((layer,), runtime, "2.14.0", machine)
    assert (reason is not None) == crashes
    if crashes:
        assert "operator 5" in reason and f"{layer.outputs} outputs x {layer.inputs} inputs" in reason
        assert "ai-edge-litert" in reason and "\n" not in reason


def test_model_refuses_before_the_interpreter_runs(edge_fx, monkeypatch):
    path = edge_fx / "models" / "multihead.int8.tflite"
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(ModelError) as e:
        Model(path, interpreter_class=TfliteRuntimeInterpreter)
    assert str(e.value).startswith(f"{path}: tflite-runtime") and "crashes (SIGSEGV)" in str(e.value)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    with pytest.raises(ModelError, match="cannot load model .the guard must refuse"):  # x86: on to the runtime
        Model(path, interpreter_class=TfliteRuntimeInterpreter)
