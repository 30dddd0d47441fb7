"""Read a converted flatbuffer: its operators (with versions) and its signature's inputs and outputs.

Names are read from the file, never assumed: the converter decides signature output names
(dict keys, or ``output_0``), the input's dtype and quantisation parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convert.errors import ConvertError
from edge.contract.card_archive import strip_card

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    """One signature tensor: dtype name, shape, and (for integer tensors) quantisation."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int


@dataclass(frozen=True)
class SignatureInfo:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def _interpreter(tflite: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=strip_card(tflite))


def signature_info(tflite: bytes, signature: str = SIGNATURE) -> SignatureInfo:
    """Inputs and outputs of ``signature`` as the converted file declares them."""
    try:
        it = _interpreter(tflite)
        sigs = it.get_signature_list()
        if signature not in sigs:
            raise ConvertError(f"converted model has no signature '{signature}'. Received: {sorted(sigs)}")
        runner = it.get_signature_runner(signature)
        ins, outs = runner.get_input_details(), runner.get_output_details()
    except ConvertError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConvertError(f"converted model cannot be read by ai-edge-litert: {e}") from None

    def info(name: str, d: dict[str, Any]) -> TensorInfo:
        scale, zp = d.get("quantization", (0.0, 0))
        return TensorInfo(name, np.dtype(d["dtype"]).name, tuple(int(x) for x in d["shape"]), float(scale), int(zp))

    return SignatureInfo({k: info(k, v) for k, v in ins.items()}, {k: info(k, v) for k, v in outs.items()})


def op_versions(tflite: bytes) -> dict[str, int]:
    """``{operator name: highest version used}`` from the flatbuffer's operator codes.

    Custom (and Flex) operators appear under their custom code, e.g. ``FlexErfinv``.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(strip_card(tflite), 0)
    found: dict[str, int] = {}
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # Codes above 127 live in builtin_code; the deprecated int8 field holds the rest.
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = (oc.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        found[name] = max(found.get(name, 0), int(oc.Version()))
    return dict(sorted(found.items()))


def non_builtin_ops(ops: dict[str, int]) -> list[str]:
    """Operators that are not TFLite built-ins (Flex delegate or custom)."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")} - {"CUSTOM", "DELEGATE"}
    return [name for name in ops if name not in builtin]


def map_outputs(keras_outputs: dict[str, int], sig_outputs: dict[str, TensorInfo]) -> dict[str, str]:
    """Keras output name -> signature output name, discovered from the converted file.

    ``keras_outputs``: output name -> number of classes. Same names map to themselves; a single
    output maps to the single signature output; otherwise outputs are matched by their (unique)
    number of classes, and anything ambiguous is an error rather than a guess.
    """
    if set(keras_outputs) == set(sig_outputs):
        return {k: k for k in keras_outputs}
    if len(keras_outputs) == 1 and len(sig_outputs) == 1:
        return {next(iter(keras_outputs)): next(iter(sig_outputs))}
    by_size: dict[int, list[str]] = {}
    for name, t in sig_outputs.items():
        by_size.setdefault(int(t.shape[-1]), []).append(name)
    mapping: dict[str, str] = {}
    for k, n in keras_outputs.items():
        cands = by_size.get(int(n), [])
        if len(cands) != 1:
            raise ConvertError(
                f"cannot tell which signature output is '{k}' ({n} classes). "
                f"Received signature outputs: {sorted(sig_outputs)}"
            )
        mapping[k] = cands[0]
    return mapping
