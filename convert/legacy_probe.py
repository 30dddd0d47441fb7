"""Load and run .tflite files in *this* interpreter environment; used through a subprocess.

``python -m convert.legacy_probe IMAGES.npz OUT_DIR FILE...`` runs each file with the edge
runtime (``POLYHEAD_RUNTIME`` picks the package): ``edge.compat.probe`` first (loads?
missing ops?), then every image of the ``images`` array and writes
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
    from edge.compat import probe
    from edge.interpreter import load_interpreter_class

    images_npz, out_dir, files = argv[0], Path(argv[1]), argv[2:]
    images = np.load(images_npz)["images"]
    _, name, version = load_interpreter_class()
    result: dict = {"runtime": name, "runtime_version": version, "files": {}}
    for i, f in enumerate(files):
        loaded = probe(f)  # the edge room's load check: {"loads", "missing_ops", "error", ...}
        entry = {k: loaded.get(k) for k in ("loads", "missing_ops", "error")}
        if loaded.get("loads"):
            try:
                _, outs, _ = predict_outputs(f, images)
                np.savez(out_dir / f"{i}.npz", **outs)
                entry["outputs"] = f"{i}.npz"
            except Exception as e:  # noqa: BLE001 - every failure is data for the report
                text = str(e).strip()
                entry.update(loads=False, error=(text.splitlines()[0] if text else type(e).__name__)[:300])
        result["files"][f] = entry
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
