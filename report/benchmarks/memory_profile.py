"""Where the edge bench worker's resident memory goes: RSS after each step of loading and running.

``python -m report.benchmarks.memory_profile MODEL.tflite [IMAGES]`` starts one fresh process per setting
(``OPENBLAS_NUM_THREADS`` unset, and 1 as the bench worker sets it) and prints the RSS (MB) after
each step: Python, numpy, Pillow, the LiteRT module, the model loaded, tensors allocated (the
arena), the first inference, 50 images through the prefetch pipeline, and the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click

STEPS_SCRIPT = r"""
import json, os, resource, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
out = {"python": rss()}
import numpy as np
out["numpy"] = rss()
import PIL.Image, PIL.JpegImagePlugin
out["pillow"] = rss()
from edge.runtime.interpreter import load_interpreter_class, limit_malloc_arenas
limit_malloc_arenas()
cls, name, version = load_interpreter_class()
out["litert module"] = rss()
from edge.runtime.predict import Predictor, iter_predictions
from edge.runtime.variants import discover, select_variant
predictor = Predictor(select_variant(discover(sys.argv[1]), None))
out["model loaded + tensors allocated"] = rss()
x = np.zeros((predictor.height, predictor.width, 3), np.uint8)
predictor.predict_image(x)
out["first inference"] = rss()
if len(sys.argv) > 2:
    from edge.bench.machine import list_images
    paths = list_images(sys.argv[2])
    for _ in iter_predictions(predictor, [paths[i % len(paths)] for i in range(50)]):
        pass
    out["50 images, prefetch thread"] = rss()
out["peak (ru_maxrss)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({k: round(v, 1) for k, v in out.items()}))
"""


def steps(model: str, images: str | None, openblas_threads: str | None) -> dict[str, float]:
    """RSS (MB) after each step in a fresh process with the given ``OPENBLAS_NUM_THREADS``."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if openblas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = openblas_threads
    args = [sys.executable, "-c", STEPS_SCRIPT, model, *([images] if images else [])]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True))
@click.argument("images", required=False, type=click.Path(exists=True, file_okay=False))
def main(model: str, images: str | None) -> None:
    """Print RSS after each step, OpenBLAS threads default against 1, as a Markdown table."""
    default, one = steps(model, images, None), steps(model, images, "1")
    click.echo("| step | RSS MB (OpenBLAS default) | RSS MB (OPENBLAS_NUM_THREADS=1) |")
    click.echo("|---|---|---|")
    for key in default:
        click.echo(f"| {key} | {default[key]} | {one.get(key)} |")


if __name__ == "__main__":
    main()
