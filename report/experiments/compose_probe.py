"""``python -m report.experiments.compose_probe DATA RUN SETTINGS...``: head settings tried on a run's stored features.

For each SETTINGS (a JSON object of ``TrainConfig`` fields, e.g. ``{"compose": "additive",
"compose_weight": 1}``; ``"seeds": [0, 1, 2]`` to repeat), trains the multihead heads on the frozen
features stored in RUN (``features/``, keyed by image bytes) with the project's own head training
(``train.pairfold``'s, i.e. ``train.fit.fit_heads`` with the compose hook), and prints one JSON line
per seed: joint accuracy on test and test_unseen, per-head unseen accuracy, and the pair-held-out
fold validation (unseen and seen pairs of the val split). No backbone pass: a setting costs
4 head trainings (the run, 3 folds). Choose on the fold validation; test_unseen is reported only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> None:
    """Parse DATA RUN SETTINGS... and print one JSON line per (setting, seed), then the mean."""
    from artifacts.layout import RunLayout
    from edge.log import configure_logging
    from train.autocompose import choose, fold_scores
    from train.data import Arrays, open_arrays
    from train.features import image_key
    from train.featurestore import FeatureStore
    from train.fit import TrainConfig, split_metrics
    from train.pairfold import fit_and_predict, fold_validation, make_folds

    if len(argv) < 3:
        raise SystemExit(__doc__)
    configure_logging()
    data_dir, run = argv[0], Path(argv[1])
    schema, arrays, _ = open_arrays(data_dir, (8, 8))  # labels and paths; the images are not used
    # The run's frozen-base features, from its sharded store (one backbone per run folder).
    folder = next(p for p in RunLayout(run).features_dir.iterdir() if p.is_dir())
    stored = FeatureStore(run, folder.name).keyed()
    feats = {s: np.stack([stored[image_key(p)] for p in a.paths]) for s, a in arrays.items()}
    rows = {s: Arrays(np.zeros((a.n, 0), np.float32), a.labels, a.joint) for s, a in arrays.items()}
    heads = schema.head_names
    for text in argv[2:]:
        setting = json.loads(text)
        seeds = setting.pop("seeds", [0])
        results = []
        for seed in seeds:
            cfg = TrainConfig(data=data_dir, out=str(run), seed=seed, **setting)
            t0 = time.perf_counter()
            if cfg.compose == "auto":  # chosen on the folds, as a run does (train/autocompose.py)
                scores = fold_scores(cfg, schema, feats["train"], rows["train"], feats["val"], rows["val"])
                cfg = dataclasses.replace(cfg, compose=choose(scores) if scores else "none")
            evals = np.concatenate([feats["test"], feats["test_unseen"]])
            probs = fit_and_predict(cfg, schema, heads, feats["train"], rows["train"], evals)
            n_test = arrays["test"].n
            m = {s: split_metrics(schema, {h: probs[h][:n_test] if s == "test" else probs[h][n_test:] for h in heads},
                                  rows[s]) for s in ("test", "test_unseen")}
            folds = make_folds(rows["train"].labels, rows["val"].labels, 3, seed=seed)
            pf = fold_validation(cfg, schema, [heads], feats["train"], rows["train"], feats["val"], rows["val"], folds)
            result = {"seed": seed, "test": m["test"]["joint_accuracy"], "unseen": m["test_unseen"]["joint_accuracy"],
                      "unseen_heads": {h: m["test_unseen"]["heads"][h]["accuracy"] for h in heads},
                      "fold_unseen": pf["unseen"]["joint_accuracy"], "fold_seen": pf["seen"]["joint_accuracy"],
                      "s": round(time.perf_counter() - t0, 1)}
            results.append(result)
            print(json.dumps({**setting, **result}), flush=True)
        keys = ("test", "unseen", "fold_unseen", "fold_seen")
        print(json.dumps({"mean": setting, **{k: round(float(np.mean([r[k] for r in results])), 4) for k in keys}}),
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
