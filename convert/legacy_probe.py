"""Load and run .tflite files in *this* interpreter environment; used through a subprocess.

``python -m convert.legacy_probe N HEIGHT WIDTH OUT_DIR FILE...`` runs each file with the edge
runtime (``POLYHEAD_RUNTIME`` picks the package): ``load_check`` first (loads? missing ops?),
then N uint8 images (HEIGHT, WIDTH, 3) read from stdin ``CHECK_BATCH`` rows at a time, each batch
through every file that loads, and writes ``OUT_DIR/result.json`` (per file: loads, error, missing
ops, runtime) and ``OUT_DIR/<i>.npz`` (its outputs). The pixels come from the host's decoding
(``convert.compat.run_legacy``), never decoded again here, and are never held whole. Numpy and
``edge`` only: it runs under tflite-runtime 2.14 with numpy < 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

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


def read_rows(stream: BinaryIO, rows: int, height: int, width: int) -> np.ndarray:
    """The next ``rows`` uint8 images (rows, height, width, 3) from ``stream``; a short read is an error."""
    want = rows * height * width * 3
    data = stream.read(want)
    if len(data) != want:
        raise EOFError(f"stdin ended after {len(data)} of {want} bytes of a batch of {rows} images")
    return np.frombuffer(data, np.uint8).reshape(rows, height, width, 3)


def main(argv: list[str]) -> int:
    from convert.runner import CHECK_BATCH, FileScores
    from edge.errors import first_line
    from edge.runtime.interpreter import load_interpreter_class

    n, height, width, out_dir, files = int(argv[0]), int(argv[1]), int(argv[2]), Path(argv[3]), argv[4:]
    interpreter_class, name, version = load_interpreter_class()
    result: dict = {"runtime": name, "runtime_version": version, "files": {}}
    scores: dict[str, FileScores] = {}
    for f in files:
        entry = result["files"][f] = load_check(interpreter_class, f)
        if entry["loads"]:
            try:
                scores[f] = FileScores(f, n)
            except Exception as e:  # noqa: BLE001 - every failure is data for the report
                entry.update(loads=False, error=first_line(e))
    for start in range(0, n, CHECK_BATCH):
        batch = read_rows(sys.stdin.buffer, min(CHECK_BATCH, n - start), height, width)
        for f in list(scores):
            try:
                scores[f].add(start, batch)
            except Exception as e:  # noqa: BLE001 - every failure is data for the report
                result["files"][f].update(loads=False, error=first_line(e))
                del scores[f]
    for i, f in enumerate(files):
        if f in scores:
            np.savez(out_dir / f"{i}.npz", **scores[f].outputs)
            result["files"][f]["outputs"] = f"{i}.npz"
    (out_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
