"""Raw outputs of every .tflite in MODELS on every image in IMAGES, and `predict --format jsonl` of
every variant, as one JSON document on stdout. Runs the same on the host and inside an emulated Pi
(only the edge package, numpy and Pillow; no pytest, no TensorFlow).

    python probe.py MODELS IMAGES [PIXELS.npz]

PIXELS.npz (decoded images, one uint8 (H, W, 3) array per name, made on the host) adds ``given``:
every model run on exactly those pixels, so interpreters are compared on identical input whatever
the local image decoder does.

``PROBE_REFERENCE_KERNELS=1`` makes the interpreter use TFLite's reference kernels
(``OpResolverType.BUILTIN_REF``): the x86 baseline that ARM's tflite-runtime matches bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
from pathlib import Path


def interpreter_class():
    from edge.runtime.interpreter import load_interpreter_class

    cls, runtime, version = load_interpreter_class()
    if not os.environ.get("PROBE_REFERENCE_KERNELS"):
        return cls, runtime, version
    resolver = sys.modules[cls.__module__].OpResolverType.BUILTIN_REF

    class Reference(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, experimental_op_resolver_type=resolver, **kwargs)

    return Reference, runtime, f"{version} reference kernels"


def raw_outputs(models: Path, images: list[Path], cls) -> dict:
    """{file: {image: {card output key: raw output list} or {"error": one line}}}."""
    from edge.runtime.model import Model
    from edge.runtime.preprocess import load_image

    out = {}
    for path in sorted(models.glob("*.tflite")):
        model = Model(path, interpreter_class=cls)
        per_image = {}
        for image in images:
            try:
                pixels = load_image(image, *model.input_size)
            except Exception as e:  # the edge's own one-line error is what we compare
                per_image[image.name] = {"error": str(e).splitlines()[0].replace(str(image.parent) + "/", "")}
                continue
            result = model.runner(**{model.input_name: model.set_input(pixels)})
            per_image[image.name] = {key: result[sig][0].tolist() for key, sig in model.card.outputs.items()}
            # The decoded input, so a decoder difference (Debian's libjpeg vs a wheel's) is told apart
            # from an interpreter difference.
            per_image[image.name]["_pixels"] = pixels.ravel().tolist()
        out[path.name] = {"precision": model.card.precision, "images": per_image}
    return out


def given_pixels(models: Path, pixels_npz: Path, cls) -> dict:
    """{file: {name: {card output key: raw output list}}} for the host-decoded pixels in ``pixels_npz``."""
    import numpy as np

    from edge.runtime.model import Model

    with np.load(pixels_npz, allow_pickle=False) as npz:
        pixels = {name: npz[name] for name in npz.files}
    out = {}
    for path in sorted(models.glob("*.tflite")):
        model = Model(path, interpreter_class=cls)
        out[path.name] = {}
        for name, px in sorted(pixels.items()):
            result = model.runner(**{model.input_name: model.set_input(np.ascontiguousarray(px))})
            out[path.name][name] = {key: result[sig][0].tolist() for key, sig in model.card.outputs.items()}
    return out


def cli_predictions(models: Path, image_dir: Path) -> dict:
    """`polyhead-edge predict MODELS IMAGES --variant V --format jsonl` for every variant, in this process."""
    from edge.cli import main
    from edge.runtime.variants import discover

    out = {}
    for vid in sorted(discover(models)):
        buf = io.StringIO()
        code = 0
        with contextlib.redirect_stdout(buf):
            try:
                main(["predict", str(models), str(image_dir), "--variant", vid, "--format", "jsonl", "--top-k", "2"],
                     standalone_mode=False)
            except SystemExit as e:
                code = e.code
        records = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
        for r in records:
            r["image"] = Path(r["image"]).name
        out[vid] = {"exit": code, "records": records}
    return out


def main(argv: list[str]) -> None:
    models, image_dir = Path(argv[0]), Path(argv[1])
    images = sorted(p for p in image_dir.iterdir() if p.name != "labels.csv")
    cls, runtime, version = interpreter_class()
    import hashlib

    import PIL

    import edge

    # Which edge code ran: the test compares these with the host's, so a stale install cannot pass.
    sources = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(edge.__file__).parent.glob("*.py"))}
    doc = {"runtime": runtime, "version": version, "machine": platform.machine(), "edge_sources": sources,
           "edge_path": str(Path(edge.__file__).parent), "python": platform.python_version(),
           "pillow": PIL.__version__,
           "raw": raw_outputs(models, images, cls)}
    if len(argv) > 2:
        doc["given"] = given_pixels(models, Path(argv[2]), cls)
    if not os.environ.get("PROBE_REFERENCE_KERNELS"):
        doc["predict"] = cli_predictions(models, image_dir)
    print(json.dumps(doc))


if __name__ == "__main__":
    main(sys.argv[1:])
