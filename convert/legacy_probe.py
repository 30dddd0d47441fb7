"""Load and run .tflite files in *this* interpreter environment; used through a subprocess.

``python -m convert.legacy_probe IMAGES.npz OUT_DIR FILE...`` runs each file with the edge
runtime (``POLYHEAD_RUNTIME`` picks the package) on the ``images`` array and writes
``OUT_DIR/result.json`` (per file: loads, error, missing ops, runtime) and ``OUT_DIR/<i>.npz``
(its outputs). Numpy and ``edge`` only: it runs under tflite-runtime 2.14 with numpy < 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from convert.runner import predict_outputs
    from edge.runtime import load_interpreter_class, missing_ops

    images_npz, out_dir, files = argv[0], Path(argv[1]), argv[2:]
    images = np.load(images_npz)["images"]
    _, name, version = load_interpreter_class()
    result: dict = {"runtime": name, "runtime_version": version, "files": {}}
    for i, f in enumerate(files):
        try:
            _, outs, _ = predict_outputs(f, images)
        except Exception as e:  # noqa: BLE001 - every failure is data for the report
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            result["files"][f] = {"loads": False, "error": msg, "missing_ops": missing_ops(str(e))}
            continue
        np.savez(out_dir / f"{i}.npz", **outs)
        result["files"][f] = {"loads": True, "outputs": f"{i}.npz"}
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
