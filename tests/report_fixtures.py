"""Synthetic stage JSON for the report tests, written to the cross-room contracts exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HEADS = {"make": ["Audi", "BMW", "Toyota"], "type": ["SUV", "sedan"]}


def _metrics(base: float) -> dict[str, Any]:
    def split(offset: float, n: int) -> dict[str, Any]:
        return {
            "n": n,
            "heads": {
                "make": {"accuracy": base - offset, "loss": 0.4 + offset, "top5": 1.0},
                "type": {"accuracy": base + 0.05 - offset, "loss": 0.3 + offset, "top5": 1.0},
            },
            "joint_accuracy": base - 0.1 - offset,
        }

    return {"test": split(0.0, 40), "val": split(0.01, 20), "test_unseen": split(0.3, 10)}


def train_json() -> dict[str, Any]:
    def variant(approach: str, files: list[str], total: int, trainable: int, macc: int, trained: int, base: float):
        return {
            "approach": approach, "files": files, "params": {"total": total, "trainable": trainable},
            "macc": {"total": macc, "trained": trained}, "keras_bytes": total * 4 + 1000,
            "train_wall_s": 12.5, "epochs": 2, "metrics": _metrics(base),
        }

    return {
        "backbone": "mobilenet_v2", "image_size": [96, 96], "weights": "none", "data": "data/synthetic",
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.11.7"},
        "variants": {
            "multihead": variant("multihead", ["models/multihead.keras"], 2_261_000, 2_227_000, 56_120_000, 7_680, 0.9123),
            "joint": variant("joint", ["models/joint.keras"], 2_270_000, 2_236_000, 56_130_000, 15_360, 0.8812),
            "separate": variant("separate", ["models/separate.make.keras", "models/separate.type.keras"],
                                4_517_000, 4_450_000, 112_230_000, 7_680, 0.9031),
        },
    }


def convert_json() -> dict[str, Any]:
    files: dict[str, Any] = {}

    def add(name: str, approach: str, heads: list[str], precision: str, nbytes: int) -> None:
        files[f"edge/{name}.{precision}.tflite"] = {
            "variant": approach, "approach": approach, "heads": heads, "precision": precision, "bytes": nbytes,
            "ops": ["CONV_2D", "FULLY_CONNECTED", "SOFTMAX"],
            "check": {"n": 40, "heads": {h: {"accuracy": 0.9, "keras_accuracy": 0.91, "drop": 0.01,
                                             "agreement": 0.995, "max_prob_diff": 0.02} for h in heads},
                      "joint_accuracy": 0.8, "keras_joint_accuracy": 0.81},
            "runtime_compat": {"ai_edge_litert": True}, "warnings": [],
        }

    for precision, scale in (("float32", 1.0), ("int8", 0.27)):
        add("multihead", "multihead", ["make", "type"], precision, int(9_051_234 * scale))
        add("joint", "joint", ["make", "type"], precision, int(9_090_111 * scale))
        add("separate.make", "separate", ["make"], precision, int(9_030_000 * scale))
        add("separate.type", "separate", ["type"], precision, int(9_020_000 * scale))
    variants: dict[str, Any] = {}
    for i, approach in enumerate(("multihead", "joint", "separate")):
        for precision in ("float32", "int8"):
            names = [n for n, f in files.items() if f["approach"] == approach and f["precision"] == precision]
            drop = 0.01 if precision == "int8" else 0.0
            variants[f"{approach}.{precision}"] = {
                "approach": approach, "precision": precision, "files": names,
                "bytes": sum(files[n]["bytes"] for n in names), "complete": True,
                "check": {"n": 40, "heads": {"make": {"accuracy": 0.88 - 0.02 * i - drop},
                                             "type": {"accuracy": 0.93 - 0.02 * i - drop}},
                          "joint_accuracy": 0.8312 - 0.03 * i - drop},
            }
    return {"versions": {"tensorflow": "2.21.0", "converter": "2.21.0"}, "files": files, "variants": variants}


def bench_json(with_samples: bool = False) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    base = {"multihead": 10.0, "separate": 19.5, "joint": 10.3}
    for approach, ms in base.items():
        for precision, scale in (("float32", 1.0), ("int8", 0.45)):
            p50 = ms * scale
            interp = {"mean": p50 * 1.02, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "std": p50 * 0.05}
            ftl = {k: v * 1.08 for k, v in interp.items()}
            if with_samples:
                interp["samples"] = [p50 * (0.95 + 0.01 * i) for i in range(10)]
            variants[f"{approach}.{precision}"] = {
                "variant": f"{approach}.{precision}", "precision": precision, "approach": approach,
                "files": [f"edge/{approach}.{precision}.tflite"], "bytes": 1, "load_ms": 5.0,
                "first_inference_ms": 30.0, "interpreter_ms": interp, "file_to_labels_ms": ftl,
                "images_per_s": 1000.0 / ftl["p50"], "peak_rss_mb": 40.0 + ms,
                "accuracy": {"heads": {"make": 0.9, "type": 0.95}, "joint": 0.85 - 0.01 * ms / 10, "n": 40},
                "errors": 0,
            }
    return {"board": "AMD EPYC", "cpu": "AMD EPYC", "governor": None, "warnings": ["governor unknown"],
            "runtime": "ai_edge_litert", "runtime_version": "2.3.0", "threads": 1, "variants": variants}


def config_json() -> dict[str, Any]:
    return {"data": "data/synthetic", "backbone": "mobilenet_v2", "image_size": [96, 96], "weights": "none",
            "epochs": 2, "batch_size": 64, "seed": 0}


def predictions_json() -> dict[str, Any]:
    return {
        "variant": "multihead.float32", "split": "test", "n": 10,
        "heads": {
            "make": {"classes": HEADS["make"], "confusion": [[3, 1, 0], [0, 2, 1], [0, 0, 3]]},
            "type": {"classes": HEADS["type"], "confusion": [[5, 0], [1, 4]]},
        },
    }


def write_run(root: Path, *, bench: bool = True, convert: bool = True, samples: bool = False) -> Path:
    """A run folder holding the JSON of every stage (or only some)."""
    root.mkdir(parents=True, exist_ok=True)
    docs = {"config.json": config_json(), "train.json": train_json(), "predictions.json": predictions_json()}
    if convert:
        docs["convert.json"] = convert_json()
    if bench:
        docs["bench.json"] = bench_json(samples)
    for name, doc in docs.items():
        (root / name).write_text(json.dumps(doc, indent=2))
    return root
