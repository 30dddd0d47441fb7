"""Load and run .tflite files in *this* interpreter environment; used through a subprocess.

``python -m convert.legacy_probe IMAGES.npz OUT_DIR FILE...`` runs each file with the edge
runtime (``POLYHEAD_RUNTIME`` picks the package): ``load_check`` first (loads? missing ops?),
then every image of the ``images`` array and writes ``OUT_DIR/result.json`` (per file: loads,
error, missing ops, runtime) and ``OUT_DIR/<i>.npz`` (its outputs). Numpy and ``edge`` only: it
runs under tflite-runtime 2.14 with numpy < 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_check(interpreter_class: type, path: str) -> dict[str, Any]:
    """Load ``path`` with ``interpreter_class`` and run each of its signatures once on zeros.

    Returns ``{"loads": bool, "missing_ops": ["FULLY_CONNECTED v12", ...], "error": str | None}``.
    The card is not consulted: this is about the flatbuffer alone.
    """
    from edge.errors import first_line
    from edge.runtime.interpreter import missing_ops

    result: dict[str, Any] = {"loads": False, "missing_ops": [], "error": None}
    try:
        interpreter = interpreter_class(model_path=str(path))
        interpreter.allocate_tensors()
        for key in interpreter.get_signature_list():
            runner = interpreter.get_signature_runner(key)
            feeds = {k: np.zeros(d["shape"], d["dtype"]) for k, d in runner.get_input_details().items()}
            runner(**feeds)
        result["loads"] = True
    except Exception as e:  # noqa: BLE001 - every failure is data for the report
        result["missing_ops"] = missing_ops(str(e).strip())
        result["error"] = first_line(e)
    return result


def main(argv: list[str]) -> int:
    from convert.runner import predict_outputs
    from edge.errors import first_line
    from edge.runtime.interpreter import load_interpreter_class

    images_npz, out_dir, files = argv[0], Path(argv[1]), argv[2:]
    images = np.load(images_npz)["images"]
    interpreter_class, name, version = load_interpreter_class()
    result: dict = {"runtime": name, "runtime_version": version, "files": {}}
    for i, f in enumerate(files):
        entry = load_check(interpreter_class, f)
        if entry["loads"]:
            try:
                _, outs, _ = predict_outputs(f, images)
                np.savez(out_dir / f"{i}.npz", **outs)
                entry["outputs"] = f"{i}.npz"
            except Exception as e:  # noqa: BLE001 - every failure is data for the report
                entry.update(loads=False, error=first_line(e))
        result["files"][f] = entry
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
