"""``python -m train add-head``: grow a trained run by one or more heads without retraining its base.

With a frozen base every head is its own read-out of the same features, so a new attribute only
needs a new Dense layer trained on cached features. ``add_heads`` writes a *new* run folder:

- ``multihead``: the same backbone and old head layers (their weights copied bit for bit), plus one
  Dense softmax per new head, trained on the train rows labelled for it;
- ``separate``: the old single-head files copied byte for byte, plus one new single-head model per
  new head (the run's frozen backbone and a new Dense layer);
- ``joint``: one softmax over label *combinations* cannot grow a head: a new head multiplies the
  combinations, so the whole output layer changes. It is left out of the new run unless
  ``retrain_joint`` is set; then its head is retrained (base still frozen) on the rows labelled for
  every head, old and new.

A fine-tuned run (``freeze_base`` false) is refused: its base has moved to serve the old heads, so
a new head trained on it would read features tuned for other attributes, and the run's own
recipe (every layer training) would not be what was done. Retrain such a run on the merged
dataset instead. The choice is documented in docs/heads.md.

The new run holds config.json, schema.json, models/ and train.json like any run, so
``python -m convert NEW_RUN``, the edge runtime and the report work on it unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.keras_io import load_model, save_model
from artifacts.layout import RunLayout, model_name
from datasets.pipeline import take_rows
from edge.contract.approaches import model_stem
from edge.contract.schema import JOINT_OUTPUT, Head, LabelSchema, SchemaError
from edge.io import atomic_write_json
from train.data import EVAL_SPLITS, Arrays
from train.fit import (
    TrainConfig,
    TrainError,
    compile_heads,
    fit_heads,
    package_versions,
    split_metrics,
    unit_rows,
)
from train.models import BACKBONE_LAYER, make_head
from train.records import TrainRecord, TrainVariant


class AddHeadError(TrainError):
    """add-head cannot proceed; the message is one line naming the value or file."""


@dataclasses.dataclass(frozen=True)
class _RunInfo:
    cfg: TrainConfig
    schema: LabelSchema
    record: dict[str, Any]


def _read_run(run: Path) -> _RunInfo:
    files = RunLayout(run)
    for path in (files.config, files.schema, files.train_record):
        if not path.is_file():
            raise AddHeadError(f"{path}: missing (add-head needs a finished training run)")
    try:
        settings = json.loads(files.config.read_text())
        # add-head trains the new heads as the run trained its own: a run from before compose existed had none.
        settings.setdefault("compose", "none")
        record = json.loads(files.train_record.read_text())
        if settings["compose"] == "auto":  # what the run's folds chose (train/autocompose.py)
            settings["compose"] = (record.get("compose") or {}).get("mode", "none")
        cfg = TrainConfig.from_dict(settings)
    except (OSError, json.JSONDecodeError) as e:
        raise AddHeadError(f"{run}: cannot read the run: {e}") from None
    return _RunInfo(cfg, LabelSchema.load(files.schema), record)


def check_new_heads(heads: Sequence[str], schema: LabelSchema, run: Path) -> tuple[str, ...]:
    """The new head names, refused when empty, named twice or already in the run."""
    if not heads:
        raise AddHeadError("name at least one --head to add")
    seen: set[str] = set()
    for h in heads:
        if h in seen:
            raise AddHeadError(f"head '{h}' is named twice")
        seen.add(h)
        if h in schema.head_names:
            raise AddHeadError(f"{run}: already has head '{h}' (its heads: {', '.join(schema.head_names)})")
        if h == JOINT_OUTPUT:
            raise AddHeadError(f"'{JOINT_OUTPUT}' is reserved for the joint output and cannot name a head")
    return tuple(heads)


def grown_dataset(data: str | Path, old: LabelSchema, new_heads: Sequence[str],
                  allow_outside_paths: bool = False) -> Any:
    """The dataset ``data`` seen through the grown schema: heads = the run's heads then the new ones.

    DATA needs a column for every head (the run's heads may be mostly empty cells: merge the run's
    dataset with the new labels, ``python -m datasets merge``). The run's heads keep their class
    lists (a label outside them is refused); a new head's classes are its labels in DATA.
    """
    from datasets.folder import MISSING, DatasetError, Record, load_dataset

    ds = load_dataset(data, allow_outside_paths=allow_outside_paths)
    csv_path = Path(data) / "labels.csv"
    for h in new_heads:
        if h not in ds.heads:
            raise AddHeadError(f"{csv_path}: has no column '{h}' (its heads: {', '.join(ds.heads)})")
    for h in old.head_names:
        if h not in ds.heads:
            raise AddHeadError(
                f"{csv_path}: has no column for the run's head '{h}' (merge the run's dataset with the new "
                f"labels: python -m datasets merge OLD NEW --out DATA)")
    names = (*old.head_names, *new_heads)
    cols = [ds.heads.index(h) for h in names]
    records = []
    for r in ds.records:
        labels = tuple(r.labels[i] for i in cols)
        if all(v == MISSING for v in labels):
            continue  # labelled only for heads this run does not have
        for head, label in zip(old.heads, labels, strict=False):
            if label != MISSING and label not in head.classes:
                raise AddHeadError(
                    f"{csv_path}: image '{r.image}' has {head.name}={label!r}, not a class of the run's head "
                    f"'{head.name}' ({', '.join(head.classes)})")
        records.append(Record(r.image, r.path, r.split, labels))
    try:
        heads = (*old.heads, *(Head(h, ds.schema.head(h).classes) for h in new_heads))
        combos = tuple(sorted({r.labels for r in records if r.split == "train" and r.fully_labelled}))
        schema = LabelSchema(heads, combos)
    except SchemaError as e:
        raise DatasetError(f"{csv_path}: {e}") from None
    return dataclasses.replace(ds, heads=names, records=tuple(records), schema=schema)


def split_features(ds: Any, image_size: Sequence[int], backbone: Any, stored: dict[str, np.ndarray]
                   ) -> tuple[dict[str, Arrays], int, int]:
    """Per split: Arrays whose ``images`` field holds the *features* of each row (N, F), labels in the
    grown schema; (that, rows found in the run's feature store, rows decoded and extracted now).

    Only images missing from the store are decoded (at the run's input size) and run through the
    frozen backbone; an image that cannot be decoded is skipped, as in training.
    """
    from datasets.folder import MISSING, DatasetError
    from datasets.pipeline import keep_decoded, open_split
    from train.featurecache import _forward, _run_batches
    from train.features import image_key

    schema = ds.schema
    heads = [schema.head(h) for h in ds.heads]
    out: dict[str, Arrays] = {}
    hits = extracted = 0
    for split in ("train", *EVAL_SPLITS):
        records = ds.split(split)
        if not records:
            continue
        keys = [image_key(r.path) for r in records]
        todo = [r for r, k in zip(records, keys, strict=True) if k not in stored]
        fresh: dict[Path, np.ndarray] = {}
        if todo:
            try:
                # Streamed: decoded a batch at a time while the backbone runs, never all at once.
                sa = open_split(dataclasses.replace(ds, records=tuple(todo)), split,
                                int(image_size[0]), int(image_size[1]))
                feats, ok = _run_batches(_forward(backbone), sa.images, 128, int(backbone.output.shape[-1]))
                errors = sa.images.subset(~ok).decode(slice(None))[2] if not ok.all() else []
                sa = keep_decoded(sa, ok, errors, split, ds.root)
            except DatasetError as e:
                raise AddHeadError(f"{ds.root}: its images do not fit the run's input "
                                   f"{image_size[0]}x{image_size[1]}x3: {e}") from None
            fresh = dict(zip(sa.paths, feats[ok], strict=True))
            extracted += len(fresh)
        rows, kept = [], []
        for r, k in zip(records, keys, strict=True):
            f = stored.get(k)
            if f is None:
                f = fresh.get(r.path)
                if f is None:
                    continue  # undecodable: skipped like in training
            else:
                hits += 1
            rows.append(f)
            kept.append(r)
        labels = {h.name: np.array([-1 if r.labels[i] == MISSING else h.index(r.labels[i]) for r in kept], np.int32)
                  for i, h in enumerate(heads)}
        joint = np.array([schema.joint_index(r.labels) for r in kept], np.int32)
        # ``images`` holds features here: every consumer below only counts, subsets and feeds them.
        out[split] = Arrays(np.asarray(rows, np.float32), labels, joint, tuple(r.path for r in kept))
    return out, hits, extracted


def _train_heads(cfg: TrainConfig, schema: LabelSchema, outputs: tuple[str, ...], feats: dict[str, np.ndarray],
                 data: dict[str, Arrays], verbose: int) -> dict[str, Any]:
    """Fresh Dense heads for ``outputs`` trained on cached features of their labelled train rows.

    The same recipe as a frozen-base run's heads: seeded initialisers, the run's optimizer,
    epochs and batch order; each head's unlabelled rows weigh 0. Returns {output: Dense layer}.
    """
    import keras

    from edge.contract.approaches import output_size

    x, train = _labelled_for(outputs, feats["train"], data["train"])
    if train.n == 0:
        raise AddHeadError(f"{cfg.data}: no train row is labelled for {', '.join(outputs)}")
    inp = keras.Input((x.shape[1],), name="features")
    layers = {o: make_head(o, output_size(schema, o), cfg.seed) for o in outputs}
    heads = keras.Model(inp, {o: layer(inp) for o, layer in layers.items()}, name="new_heads")
    compile_heads(heads, cfg, outputs, train.n)
    vx = val = None
    if data.get("val") is not None:
        vx, val = _labelled_for(outputs, feats["val"], data["val"])
        if not val.n:
            vx = val = None
    fit_heads(heads, cfg, schema, outputs, x, train, vx, val, cfg.epochs, verbose=verbose)
    return layers


def _labelled_for(outputs: tuple[str, ...], feats: np.ndarray, arrays: Arrays) -> tuple[np.ndarray, Arrays]:
    """The features and rows of a split that carry a label for at least one of ``outputs``."""
    rows = unit_rows(arrays, outputs)
    if rows is None:
        return feats, arrays
    return take_rows(feats, rows), arrays.subset(rows)


def _assemble(name: str, backbone: Any, head_layers: dict[str, Any], image_size: Sequence[int]) -> Any:
    """Input ``image`` -> ``backbone`` -> the given head layers (reused objects: weights unchanged)."""
    import keras

    inp = keras.Input((int(image_size[0]), int(image_size[1]), 3), name="image", dtype="float32")
    f = backbone(inp)
    return keras.Model(inp, {o: layer(f) for o, layer in head_layers.items()}, name=name)


def _probs_on_features(head_layers: dict[str, Any], feats: np.ndarray) -> dict[str, np.ndarray]:
    """Softmax outputs of head layers on cached features (the frozen base ran once per split)."""
    import keras

    inp = keras.Input((feats.shape[1],))
    m = keras.Model(inp, {o: layer(inp) for o, layer in head_layers.items()})
    out = m.predict(feats, batch_size=256, verbose=0)
    return {k: np.asarray(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class _Growth:
    """What growing one approach needs: the settings, both schemas, the features and where to write."""

    cfg: Any
    schema: LabelSchema
    old: LabelSchema
    new_heads: tuple[str, ...]
    feats: dict[str, np.ndarray]
    arrays: dict[str, Any]
    backbone: Any
    run: Path
    tmp: Path
    verbose: int


@dataclasses.dataclass
class _Grown:
    """One approach after growing: its files, models, each model's head layers, and training seconds."""

    files: list[str]
    models: list[Any]
    layers_by_model: list[dict[str, Any]]
    train_s: float = 0.0


def _grow_multihead(job: _Growth, old_model: Any) -> _Grown:
    """models/multihead.keras with the old heads' layers (bit for bit) and the new heads trained."""
    t0 = time.perf_counter()
    trained = _train_heads(job.cfg, job.schema, job.new_heads, job.feats, job.arrays, job.verbose)
    train_s = time.perf_counter() - t0
    layers = {h: old_model.get_layer(h) for h in job.old.head_names}
    layers.update({h: trained[h] for h in job.new_heads})
    model = _assemble(old_model.name, old_model.get_layer(BACKBONE_LAYER), layers, job.cfg.image_size)
    save_model(model, RunLayout(job.tmp).model("multihead"))
    return _Grown([model_name("multihead")], [model], [layers], train_s)


def _grow_separate(job: _Growth, trained: dict[str, Any]) -> _Grown:
    """The old single-head files copied byte for byte, plus one new model per new head."""
    grown = _Grown([], [], [])
    for h in job.old.head_names:
        name = model_name(model_stem("separate", h))
        RunLayout(job.tmp).models_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(job.run / name, job.tmp / name)  # untouched: byte for byte
        m = load_model(job.run / name)
        grown.files.append(name)
        grown.models.append(m)
        grown.layers_by_model.append({h: m.get_layer(h)})
    for h in job.new_heads:
        if len(job.new_heads) == 1 and h in trained:
            # Alone, the multihead's new head had the same rows, initialiser and batches
            # as a separate one would: the same weights, so it is reused, not retrained.
            layer = trained[h]
        else:
            t0 = time.perf_counter()
            layer = _train_heads(job.cfg, job.schema, (h,), job.feats, job.arrays, job.verbose)[h]
            grown.train_s += time.perf_counter() - t0
        m = _assemble(f"separate_{h}", job.backbone, {h: layer}, job.cfg.image_size)
        save_model(m, RunLayout(job.tmp).model(model_stem("separate", h)))
        grown.files.append(model_name(model_stem("separate", h)))
        grown.models.append(m)
        grown.layers_by_model.append({h: layer})
    return grown


def _grow_joint(job: _Growth, data: str | Path) -> _Grown:
    """The joint model retrained over the grown label combinations (on request only)."""
    if not job.schema.num_combinations:
        raise AddHeadError(f"{data}: no train row is labelled for every head; joint cannot be retrained")
    t0 = time.perf_counter()
    joint_layers = _train_heads(job.cfg, job.schema, (JOINT_OUTPUT,), job.feats, job.arrays, job.verbose)
    train_s = time.perf_counter() - t0
    m = _assemble("joint", job.backbone, joint_layers, job.cfg.image_size)
    save_model(m, RunLayout(job.tmp).model("joint"))
    return _Grown([model_name("joint")], [m], [joint_layers], train_s)


def _approach_record(approach: str, grown: _Grown, job: _Growth, parent: dict[str, Any],
                     started: float) -> TrainVariant:
    """train.json's record of one grown approach, scored on the cached features of every split."""
    from train.macc import approach_costs

    metrics = {}
    for split in (s for s in EVAL_SPLITS if s in job.arrays):
        outs: dict[str, np.ndarray] = {}
        for layers in grown.layers_by_model:
            outs.update(_probs_on_features(layers, job.feats[split]))
        metrics[split] = split_metrics(job.schema, job.schema.head_probs(outs), job.arrays[split])
    outputs = [o for layers in grown.layers_by_model for o in layers]
    return {
        "approach": approach,
        "train_n": {o: int(job.arrays["train"].labelled(o).sum()) for o in outputs},
        "files": grown.files,
        **approach_costs(grown.models),
        "keras_bytes": sum((job.tmp / f).stat().st_size for f in grown.files),
        # The parent's training plus this run's training of the added heads.
        "train_wall_s": round(float(parent.get("train_wall_s", 0.0)) + grown.train_s, 3),
        "feature_extract_s": round(float(parent.get("feature_extract_s", 0.0)), 3),
        "epochs": job.cfg.epochs,
        "metrics": metrics,
        "added_s": round(time.perf_counter() - started, 3),
    }


@dataclasses.dataclass
class _Approaches:
    """Every grown approach's train.json record, the notes to print and the seconds spent training."""

    variants: dict[str, TrainVariant] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    train_s: float = 0.0


def _grow_approaches(job: _Growth, approaches: list[str], first_model: Any, parent_record: dict[str, Any],
                     data: str | Path, retrain_joint: bool) -> _Approaches:
    """Grow each approach of the run in turn (joint only on request) and score it."""
    done = _Approaches()
    trained: dict[str, Any] = {}  # new head -> its multihead Dense layer
    for approach in approaches:
        t_a = time.perf_counter()
        if approach == "joint" and not retrain_joint:
            done.notes.append("joint left out: one softmax over label combinations cannot grow a head "
                              "without retraining its output layer (pass --retrain-joint to retrain it)")
            continue
        if approach == "multihead":
            grown = _grow_multihead(job, first_model)
            trained = {h: grown.layers_by_model[0][h] for h in job.new_heads}
        elif approach == "separate":
            grown = _grow_separate(job, trained)
        else:
            grown = _grow_joint(job, data)
            done.notes.append(f"joint retrained on {int(job.arrays['train'].labelled(JOINT_OUTPUT).sum())} "
                              "train rows labelled for every head")
        parent = parent_record.get("variants", {}).get(approach, {})
        done.variants[approach] = _approach_record(approach, grown, job, parent, t_a)
        done.train_s += grown.train_s
    return done


def _check_request(run: Path, heads: Sequence[str], out: Path,
                   retrain_joint: bool) -> tuple[_RunInfo, tuple[str, ...], list[str]]:
    """The run, the new heads and the approaches to grow, or one AddHeadError line saying why not."""
    if not run.is_dir():
        raise AddHeadError(f"{run}: run folder not found")
    info = _read_run(run)
    cfg, old = info.cfg, info.schema
    new_heads = check_new_heads(heads, old, run)
    if out.resolve() == run.resolve():
        raise AddHeadError(f"{out}: --out must be a new folder (the run {run} is kept as it is)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AddHeadError(f"{out}: exists and is not empty; choose another --out")
    if not cfg.freeze_base:
        raise AddHeadError(
            f"{run}: was fine-tuned (freeze_base false): its base has moved to serve "
            f"{', '.join(old.head_names)}, so a head added on it would not be the paper's frozen-base read-out; "
            f"retrain on the merged dataset instead (python -m train --data DATA ...)")
    approaches = [a for a in info.record.get("variants", {}) if a in cfg.approaches] or list(cfg.approaches)
    if approaches == ["joint"] and not retrain_joint:
        raise AddHeadError(f"{run}: holds only the joint approach, which cannot grow a head without retraining "
                           "its output layer; pass --retrain-joint")
    return info, new_heads, approaches


def _write_run(tmp: Path, backbone: Any, arrays: dict[str, Any], cfg: Any, schema: LabelSchema,
               record: dict[str, Any]) -> None:
    """The new run's feature store, config.json, schema.json and train.json, into its temp folder."""
    from train.features import image_key
    from train.featurestore import FeatureStore
    from train.fit import weights_fingerprint

    # The new run keeps a feature store too, so a later add-head on it needs no image either.
    store = FeatureStore(tmp, weights_fingerprint(backbone))
    for split, a in arrays.items():
        store.prepare_split(split, a.n)
        for shard in range(store.num_shards(a.n)):
            lo, hi = store.shard_range(shard, a.n)
            store.write_shard(split, shard, np.asarray(a.images[lo:hi], np.float32), np.ones(hi - lo, bool),
                              [image_key(p) for p in a.paths[lo:hi]])
    files = RunLayout(tmp)
    atomic_write_json(files.config, cfg.to_dict())
    schema.save(files.schema)
    atomic_write_json(files.train_record, record)


def _run_record(parent_record: dict[str, Any], data: str | Path, ds: Any, arrays: dict[str, Arrays],
                variants: dict[str, TrainVariant], summary: dict[str, Any]) -> TrainRecord:
    """The new run's train.json: the parent's settings, this dataset and versions, the grown
    variants and what add-head did (``add_head``)."""
    return {
        **{k: v for k, v in parent_record.items() if k not in ("variants", "dataset", "data", "versions", "pair_folds")},
        "data": str(data),
        "dataset": {"sizes": {s: a.n for s, a in arrays.items()},
                    "labelled": {s: a.labelled_counts() for s, a in arrays.items()},
                    "unlabelled_rows": ds.unlabelled_rows},
        "versions": package_versions(),
        "variants": variants,
        "add_head": summary,
    }


def _features(run: Path, approaches: list[str], ds: Any, image_size: Any,
              data: str | Path) -> tuple[Any, Any, dict[str, Any], int, int, float]:
    """The run's first model, its frozen backbone and every split's features, with how many came
    from the run's feature store and how many were extracted now, and the seconds that took."""
    from train.features import stored_features
    from train.fit import weights_fingerprint

    # Every model of a frozen-base run has the same backbone weights: one feature per image, read
    # from the run's feature store where the run saw the image, extracted now otherwise.
    files = RunLayout(run)
    first_file = files.model("multihead") if "multihead" in approaches else next(iter(files.keras_files()), None)
    if first_file is None:
        raise AddHeadError(f"{files.models_dir}: no model files")
    first_model = load_model(first_file)  # loaded once: the slowest step of add-head
    backbone = first_model.get_layer(BACKBONE_LAYER)
    backbone.trainable = False
    t0 = time.perf_counter()
    arrays, hits, extracted = split_features(ds, image_size, backbone,
                                             stored_features(run, weights_fingerprint(backbone)))
    extract_s = time.perf_counter() - t0
    if "train" not in arrays or arrays["train"].n == 0:
        raise AddHeadError(f"{data}: no train rows")
    return first_model, backbone, arrays, hits, extracted, extract_s


def add_heads(
    run: str | Path,
    data: str | Path,
    heads: Sequence[str],
    out: str | Path,
    retrain_joint: bool = False,
    verbose: int = 0,
    log: Any = print,
) -> dict[str, Any]:
    """Write ``out``: the run ``run`` grown by ``heads`` (labels from dataset ``data``); return its train.json.

    Raises AddHeadError (one line) on a head named twice or already present, a DATA without a
    head's column, images that do not fit the run's input, a fine-tuned run or an occupied ``out``.
    ``out`` appears complete or not at all; ``run`` is never modified.
    """
    t_start = time.perf_counter()
    run, out = Path(run), Path(out)
    info, new_heads, approaches = _check_request(run, heads, out, retrain_joint)
    cfg, old = info.cfg, info.schema

    ds = grown_dataset(data, old, new_heads, cfg.allow_outside_paths)
    schema = ds.schema
    new_cfg = dataclasses.replace(cfg, data=str(data), out=str(out),
                                  approaches=tuple(a for a in cfg.approaches
                                                   if a in approaches and (a != "joint" or retrain_joint)))

    first_model, backbone, arrays, hits, extracted, extract_s = _features(run, approaches, ds, cfg.image_size, data)
    feats = {s: a.images for s, a in arrays.items()}
    log(f"features: {hits} images from the run's feature store, {extracted} extracted now")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.resolve().parent))
    try:
        job = _Growth(cfg, schema, old, new_heads, feats, arrays, backbone, run, tmp, verbose)
        grown = _grow_approaches(job, approaches, first_model, info.record, data, retrain_joint)
        wall = time.perf_counter() - t_start
        record = _run_record(info.record, data, ds, arrays, grown.variants, {
            "parent_run": str(run),
            "heads": list(new_heads),
            "joint": ("retrained" if retrain_joint else "left out") if "joint" in approaches else "not in run",
            "wall_s": round(wall, 3),
            "train_s": round(grown.train_s, 3),
            "feature_extract_s": round(extract_s, 3),
            "features_from_store": hits,
            "features_extracted": extracted,
            "notes": grown.notes,
        })
        _write_run(tmp, backbone, arrays, new_cfg, schema, record)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for note in grown.notes:
        log(note)
    return record
