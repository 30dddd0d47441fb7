"""The TFLite operators polyhead's converter emits, per backbone, approach and precision.

``python tests/converter_ops.py [BACKBONE...]`` builds every registered backbone (random weights,
its smallest size) for each approach, converts it at every precision with ``convert.tflite`` and
prints one JSON line per file with its operator names (and any file the edge's model check would
refuse), then the union. The allow-list ``ALLOWED_OPERATORS`` in ``edge/safety/modelcheck_graph.py`` is
derived from this union (no test reruns it: run this script when a backbone or precision is added).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def converted_ops(backbone: str, approach: str, size: int) -> dict[str, list[str]]:
    """``{file stem.precision: sorted operator names}`` for one backbone and approach."""
    from convert_fixtures import build_models

    from convert.inspect import op_versions
    from convert.tflite import convert_keras, exported
    from edge.contract.schema import LabelSchema
    from edge.safety.modelcheck import ModelCheckError, check_model

    schema = LabelSchema.from_labels(("make", "type"), [(m, t) for m in "abc" for t in "xy"])
    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    out = {}
    for stem, model in build_models(approach, schema, backbone, size).items():
        with exported(model) as saved:
            for precision in ("float32", "float16", "dynamic", "int8"):
                data = convert_keras(model, precision, images if precision == "int8" else None, saved_model_dir=saved)
                try:
                    check_model(data, f"{backbone}:{stem}.{precision}")
                except ModelCheckError as e:  # a real converted file must pass the edge's model check
                    print(json.dumps({"refused": str(e)}), flush=True)
                out[f"{backbone}:{stem}.{precision}"] = sorted(op_versions(data))
    return out


def main(argv: list[str]) -> int:
    from train.backbones import backbone_spec, list_backbones

    union: set[str] = set()
    for name in argv or list_backbones():
        size = max(backbone_spec(name).min_size, 32)
        for approach in ("multihead", "joint", "separate") if name in ("tiny_cnn", "mobilenet_v2_035") else ("multihead",):
            for key, ops in converted_ops(name, approach, size).items():
                union.update(ops)
                print(json.dumps({"file": key, "ops": ops}), flush=True)
    print(json.dumps({"union": sorted(union)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
