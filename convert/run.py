"""Convert every model of a run folder, check each file, and write ``convert.json``.

``runs/NAME/models/<stem>.keras`` -> ``runs/NAME/edge/<stem>.<precision>.tflite`` where ``stem`` is
``multihead``, ``joint`` or ``separate.<head>``. Re-running converts only files whose source
``.keras`` (sha256) or settings changed, or whose output is missing or altered, unless ``force``.
Every write is atomic and ``convert.json`` is rewritten after each file, so a killed conversion
leaves complete files and a convert.json that describes exactly those.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.check import check_heads, verdict
from convert.errors import ConvertError
from convert.tflite import ConversionSettings, settings_for
from edge.card import APPROACHES, PRECISIONS, InputSpec, ModelCard, write_model
from edge.interpreter import dist_version
from edge.io import atomic_write_json
from edge.schema import JOINT_OUTPUT, LabelSchema, SchemaError

CONVERT_FORMAT_VERSION = 1
DEFAULT_CALIBRATION = 256
CHECK_SPLIT = "test"

Log = Callable[[str], None]


@dataclass(frozen=True)
class SourceModel:
    """One .keras file of a run and what it is."""

    path: Path
    stem: str
    """``multihead``, ``joint`` or ``separate.<head>``."""
    approach: str
    heads: tuple[str, ...]

    def output_name(self, precision: str) -> str:
        return f"edge/{self.stem}.{precision}.tflite"

    @property
    def output_keys(self) -> tuple[str, ...]:
        return (JOINT_OUTPUT,) if self.approach == "joint" else self.heads


def find_models(run_dir: Path, schema: LabelSchema) -> list[SourceModel]:
    """The run's models/*.keras, each with its approach; anything unrecognised is an error."""
    models_dir = run_dir / "models"
    files = sorted(models_dir.glob("*.keras")) if models_dir.is_dir() else []
    if not files:
        raise ConvertError(
            f"{run_dir}: no models (expected models/multihead.keras, models/joint.keras or models/separate.<head>.keras)"
        )
    found = []
    for f in files:
        stem = f.name[: -len(".keras")]
        approach, _, head = stem.partition(".")
        if approach not in APPROACHES or (approach == "separate") != bool(head):
            raise ConvertError(
                f"{f}: unknown approach '{stem}'. Known: multihead.keras, joint.keras, separate.<head>.keras"
            )
        if approach == "separate":
            if head not in schema.head_names:
                raise ConvertError(f"{f}: head '{head}' is not in schema.json. Heads: {list(schema.head_names)}")
            heads: tuple[str, ...] = (head,)
        else:
            heads = schema.head_names
        found.append(SourceModel(f, stem, approach, heads))
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{path}: missing ({what})") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: unreadable ({e})") from None
    if not isinstance(d, dict):
        raise ConvertError(f"{path}: expected a JSON object")
    return d


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from edge.interpreter import load_interpreter_class

    _, rt, rt_version = load_interpreter_class("ai-edge-litert")
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "converter": f"tf.lite.TFLiteConverter.from_keras_model (tensorflow {tf.__version__})",
        rt: rt_version,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _clean_stale_temps(edge_dir: Path, run_dir: Path) -> list[str]:
    """Remove temporary files a killed atomic write left (``.<name>.<random>.tmp``)."""
    removed = []
    for folder in (edge_dir, run_dir):
        if not folder.is_dir():
            continue
        for p in folder.glob(".*.tmp"):
            if p.name.startswith((".convert.json.",)) or p.parent == edge_dir:
                p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed


def keras_head_probs(model: Any, source: SourceModel, schema: LabelSchema, images: np.ndarray) -> dict[str, np.ndarray]:
    """The Keras model's per-head probabilities on uint8 images (joint decoded into heads)."""
    out = model.predict(images.astype(np.float32), batch_size=32, verbose=0)
    if not isinstance(out, dict):
        out = {source.output_keys[0]: out} if len(source.output_keys) == 1 else dict(zip(source.output_keys, out, strict=True))
    out = {k: np.asarray(v, np.float32) for k, v in out.items()}
    if source.approach == "joint":
        return schema.decode_joint(out[JOINT_OUTPUT])
    return {h: out[h] for h in source.heads}


def _load_keras(path: Path) -> Any:
    from train.models import ModelError, load_model

    try:
        return load_model(path)
    except ModelError as e:
        raise ConvertError(str(e)) from None


def _input_spec(sig_inputs: dict[str, Any], size: tuple[int, int]) -> InputSpec:
    if len(sig_inputs) != 1:
        raise ConvertError(f"converted model must have one input. Received: {sorted(sig_inputs)}")
    t = next(iter(sig_inputs.values()))
    if t.dtype not in ("float32", "uint8", "int8"):
        raise ConvertError(f"converted model input '{t.name}' has unsupported dtype {t.dtype}")
    integer = t.dtype != "float32"
    return InputSpec(
        name=t.name,
        height=size[0],
        width=size[1],
        channels=3,
        dtype=t.dtype,
        scale=t.scale if integer else None,
        zero_point=t.zero_point if integer else None,
        value_range=(0.0, 255.0),
    )


def convert_one(
    model: Any,
    source: SourceModel,
    settings: ConversionSettings,
    schema: LabelSchema,
    backbone: str,
    versions: dict[str, str],
    out_path: Path,
    calibration: np.ndarray | None,
    extra: dict[str, Any],
    saved_model_dir: str | None = None,
) -> dict[str, Any]:
    """Convert one model at one precision and write it with its card. Returns the file's facts."""
    from convert.errors import UnsupportedOpError
    from convert.inspect import map_outputs, non_builtin_ops, op_versions, signature_info
    from convert.tflite import convert_keras
    from train.models import output_classes

    t0 = time.perf_counter()
    try:
        data = convert_keras(model, settings.precision, calibration, settings, saved_model_dir)
    except UnsupportedOpError as e:
        raise UnsupportedOpError(f"{source.path}: {e}") from None
    convert_s = time.perf_counter() - t0
    ops = op_versions(data)
    bad = non_builtin_ops(ops)
    if bad:
        raise ConvertError(f"{source.path}: converted file uses non-built-in ops {bad} (Flex/custom is not allowed)")
    sig = signature_info(data)
    n_classes = {k: output_classes(schema, k) for k in source.output_keys}
    outputs = map_outputs(n_classes, sig.outputs)
    size = tuple(int(x) for x in model.inputs[0].shape[1:3])
    card = ModelCard(
        variant=source.approach,
        approach=source.approach,
        schema=schema,
        heads=source.heads,
        outputs=outputs,
        input=_input_spec(sig.inputs, size),
        backbone=backbone,
        precision=settings.precision,
        converter_version=versions["converter"],
        tensorflow_version=versions["tensorflow"],
        extra=extra,
    )
    write_model(out_path, data, card)
    return {
        "card": card,
        "ops": sorted(ops),
        "op_versions": ops,
        "output_dtypes": {k: sig.outputs[v].dtype for k, v in outputs.items()},
        "convert_s": round(convert_s, 3),
    }


def _group_variants(files: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, e in sorted(files.items()):
        groups.setdefault(f"{e['variant']}.{e['precision']}", []).append(name)
    return groups


def convert_run(
    run_dir: str | Path,
    precisions: Sequence[str] = PRECISIONS,
    calibration: int = DEFAULT_CALIBRATION,
    force: bool = False,
    threads: int = 1,
    check_images: int | None = None,
    seed: int = 0,
    legacy: bool = True,
    log: Log | None = None,
    data: str | Path | None = None,
    allow_outside_paths: bool | None = None,
) -> dict[str, Any]:
    """Convert, check and record every model of ``run_dir``; returns convert.json's content.

    ``data`` overrides the dataset folder named in config.json (its test split checks every file,
    its train split calibrates int8). Raises ConvertError (one line) for a run with no models, an
    unknown approach, a missing dataset, no calibration images or a model that needs non-built-in
    ops. Files that fail their check are still written and listed in ``errors``; the CLI exits 1.
    ``allow_outside_paths`` (accept labels.csv image paths that are absolute or leave the dataset
    folder) defaults to config.json's value when the dataset is the run's own, else False.
    """
    log = log or (lambda s: None)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConvertError(f"{run_dir}: run folder not found")
    precisions = tuple(dict.fromkeys(precisions))
    for p in precisions:
        settings_for(p)  # validates the name
    if calibration < 1 and "int8" in precisions:
        raise ConvertError(f"--calibration must be at least 1 for int8. Received: calibration={calibration}")
    try:
        schema = LabelSchema.load(run_dir / "schema.json")
    except FileNotFoundError:
        raise ConvertError(f"{run_dir / 'schema.json'}: missing (the label schema of the run)") from None
    except (SchemaError, OSError, ValueError) as e:
        msg = str(e)
        raise ConvertError(msg if str(run_dir / "schema.json") in msg else f"{run_dir / 'schema.json'}: {msg}") from None
    sources = find_models(run_dir, schema)
    config = _read_json(run_dir / "config.json", "the run's resolved settings")
    backbone = str(config.get("backbone", ""))
    edge_dir = run_dir / "edge"
    json_path = run_dir / "convert.json"
    for name in _clean_stale_temps(edge_dir, run_dir):
        log(f"removed a temporary file left by an interrupted write: {name}")

    # Read once, before anything is rewritten: convert.json is saved after every converted file.
    previous: dict[str, Any] = {}
    previous_versions: dict[str, str] = {}
    previous_variants: dict[str, Any] = {}
    if json_path.exists():
        try:
            old_doc = json.loads(json_path.read_text())
            previous = old_doc.get("files", {}) or {}
            previous_versions = old_doc.get("versions", {}) or {}
            previous_variants = old_doc.get("variants", {}) or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            log(f"{json_path}: unreadable, converting everything again")

    # -- what needs doing ------------------------------------------------------------------------
    todo: list[tuple[SourceModel, ConversionSettings, str]] = []
    kept: dict[str, Any] = {}
    source_sha = {s.stem: _sha256(s.path) for s in sources}
    tf_version = dist_version("tensorflow")
    for s in sources:
        for p in precisions:
            settings = settings_for(p, calibration, seed)
            name = s.output_name(p)
            old = previous.get(name)
            path = run_dir / name
            fresh = (
                not force
                and isinstance(old, dict)
                and old.get("source", {}).get("sha256") == source_sha[s.stem]
                and old.get("settings") == settings.to_dict()
                and old.get("tensorflow") == tf_version  # a new converter makes new files
                and path.is_file()
                and old.get("sha256") == _sha256(path)
                and old.get("check") is not None
            )
            if fresh:
                kept[name] = old
            else:
                todo.append((s, settings, name))
    # Files from other precisions/models of earlier runs stay listed only if still on disk.
    for name, old in previous.items():
        if name not in kept and (run_dir / name).is_file() and not any(t[2] == name for t in todo):
            if isinstance(old, dict) and old.get("source", {}).get("sha256") in source_sha.values():
                kept[name] = old

    # Nothing to convert: no need to import TensorFlow just to restate its version.
    versions = _versions() if todo or not previous_versions else previous_versions
    doc: dict[str, Any] = {
        "format_version": CONVERT_FORMAT_VERSION,
        "run": run_dir.name,
        "versions": versions,
        "settings": {
            "precisions": list(precisions),
            "calibration": calibration,
            "threads": threads,
            "check_split": CHECK_SPLIT,
            "check_images": check_images,
            "seed": seed,
        },
        "files": dict(kept),
        "variants": {},
        "warnings": [],
        "errors": [],
    }
    for name in sorted(kept):
        log(f"unchanged  {name}")

    def save() -> None:
        doc["files"] = dict(sorted(doc["files"].items()))
        atomic_write_json(json_path, doc)

    if not todo:
        _refresh_verdicts(doc)
        _summarise(doc, run_dir, schema, None, None, log, previous=previous_variants)
        save()
        return doc

    # -- data ------------------------------------------------------------------------------------
    from convert.data import calibration_records, load_records, open_dataset, resolve_data_root

    data_root = resolve_data_root(str(data if data is not None else config.get("data", "")), run_dir)
    if allow_outside_paths is None:  # as the run was trained, for the run's own dataset only
        allow_outside_paths = config.get("allow_outside_paths") is True and _is_runs_dataset(data_root, config, run_dir)
    ds = open_dataset(data_root, allow_outside_paths=allow_outside_paths)
    test_records = ds.split(CHECK_SPLIT)
    if check_images is not None:
        test_records = test_records[: max(0, int(check_images))]
    cal_records: tuple[Any, ...] = ()
    if any(st.precision == "int8" for _, st, _ in todo):
        cal_records = calibration_records(ds.split("train"), calibration, seed)
        if not cal_records:
            raise ConvertError(f"{data_root}: no calibration images (the train split is empty); int8 needs some")
    cache: dict[tuple[str, tuple[int, int]], Any] = {}

    def images_for(split: str, records: tuple[Any, ...], size: tuple[int, int]) -> Any:
        key = (split, size)
        if key not in cache:
            cache[key] = load_records(ds, records, split, schema, size)
            for p, err in cache[key].skipped:
                doc["warnings"].append(f"skipped unreadable image {p}: {err}")
        return cache[key]

    # -- convert and check -----------------------------------------------------------------------
    from convert.runner import predict_outputs, to_heads
    from convert.tflite import exported

    # Per converted file: its ai-edge-litert outputs, input size, card and Keras reference (for tflite-runtime).
    litert_outputs: dict[Path, tuple[dict[str, np.ndarray], tuple[int, int], ModelCard, dict[str, np.ndarray]]] = {}
    keras_cache: dict[str, dict[str, np.ndarray]] = {}
    by_source: dict[str, list[tuple[ConversionSettings, str]]] = {}
    for s, st, name in todo:
        by_source.setdefault(s.stem, []).append((st, name))
    size: tuple[int, int] = (0, 0)
    for s in sources:
        if s.stem not in by_source:
            continue
        model = _load_keras(s.path)
        size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
        test = images_for(CHECK_SPLIT, test_records, size)
        kprobs = keras_head_probs(model, s, schema, test.images)
        keras_cache[s.stem] = kprobs
        with exported(model) as saved_model_dir:
            for st, name in by_source[s.stem]:
                out_path = run_dir / name
                cal = None
                if st.precision == "int8":
                    cal = images_for("train", cal_records, size).images
                    if len(cal) == 0:
                        raise ConvertError(f"{data_root}: no readable calibration images in the train split")
                extra = {
                    "run": run_dir.name,
                    "source": f"models/{s.path.name}",
                    "source_sha256": source_sha[s.stem],
                    "image_size": list(size),
                    "weights": config.get("weights"),
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    **({"calibration": {"images": len(cal), "split": "train", "seed": seed}} if cal is not None else {}),
                }
                facts = convert_one(model, s, st, schema, backbone, versions, out_path, cal, extra, saved_model_dir)
                card: ModelCard = facts.pop("card")
                _, outs, runtime = predict_outputs(out_path, test.images, num_threads=threads)
                check = check_heads(to_heads(card, outs), kprobs, test.labels, schema.head_names)
                errors, warnings = verdict(name, st.precision, check)
                litert_outputs[out_path] = (outs, size, card, kprobs)
                entry = {
                    "variant": card.variant,
                    "approach": card.approach,
                    "heads": list(card.heads),
                    "precision": st.precision,
                    "bytes": out_path.stat().st_size,
                    "sha256": _sha256(out_path),
                    "source": {"path": f"models/{s.path.name}", "sha256": source_sha[s.stem],
                               "bytes": s.path.stat().st_size},
                    "settings": st.to_dict(),
                    "tensorflow": tf_version,
                    **({"calibration_images": len(cal)} if cal is not None else {}),
                    "input": {"dtype": card.input.dtype, "scale": card.input.scale,
                              "zero_point": card.input.zero_point,
                              "height": card.input.height, "width": card.input.width},
                    "outputs": dict(card.outputs),
                    **facts,
                    "check": check,
                    "passed": not errors,
                    "runtime_compat": {"ai-edge-litert": {"runtime": runtime, "loads": True, "status": "ok"}},
                    "warnings": warnings,
                    "errors": errors,
                }
                doc["files"][name] = entry
                save()
                line = "  ".join(
                    f"{h}: acc {m['accuracy']:.3f} (keras {m['keras_accuracy']:.3f}) agree {m['agreement']:.3f}"
                    for h, m in check["heads"].items() if m["accuracy"] is not None
                )
                log(f"converted  {name}  {entry['bytes'] / 1e6:.2f} MB  {line}")
                for w in warnings:
                    log(f"WARNING: {w}")
                for e in errors:
                    log(f"ERROR: {e}")

    # -- tflite-runtime 2.14 ---------------------------------------------------------------------
    if litert_outputs:
        from convert.compat import LEGACY_KEY, compare_outputs, run_legacy

        by_size: dict[tuple[int, int], list[Path]] = {}
        for p, (_, size, _, _) in litert_outputs.items():
            by_size.setdefault(size, []).append(p)
        for size, paths in by_size.items():
            test = cache[(CHECK_SPLIT, size)]
            if legacy:
                results = run_legacy(paths, test.images)
            else:
                results = {p: {"runtime": LEGACY_KEY, "loads": None, "status": "unchecked",
                               "error": "skipped (--no-legacy)"} for p in paths}
            for p, compat in results.items():
                name = p.relative_to(run_dir).as_posix()
                entry = doc["files"][name]
                outs, _, card, kprobs = litert_outputs[p]
                theirs = compat.pop("outputs", None)
                if theirs is not None:
                    # The same check as in ai-edge-litert: against Keras and the labels, same bounds.
                    compat["vs_ai_edge_litert"] = compare_outputs(outs, theirs)
                    compat["check"] = check_heads(to_heads(card, theirs), kprobs, test.labels, schema.head_names)
                    errs, _ = verdict(name, entry["precision"], compat["check"])
                    compat["status"] = "ok" if not errs else "disagrees"
                entry["runtime_compat"][LEGACY_KEY] = compat
                if legacy:
                    _embed_compat(p, entry)
                    log(f"tflite-runtime  {name}: {compat.get('status')}")
        save()

    _refresh_verdicts(doc)
    _summarise(doc, run_dir, schema, keras_cache, cache.get((CHECK_SPLIT, size)) if litert_outputs else None, log,
               changed={e["variant"] + "." + e["precision"] for e in (doc["files"][n] for _, _, n in todo)},
               threads=threads, previous=previous_variants)
    save()
    return doc


def _is_runs_dataset(data_root: Path, config: dict[str, Any], run_dir: Path) -> bool:
    """True if ``data_root`` is the dataset folder config.json names (``--data`` may name another)."""
    from convert.data import resolve_data_root

    try:
        return data_root.resolve() == resolve_data_root(str(config.get("data", "")), run_dir).resolve()
    except (ConvertError, OSError):
        return False


def _refresh_verdicts(doc: dict[str, Any]) -> None:
    """Errors and warnings of every file from its stored checks, with today's bounds (kept files too)."""
    for name, entry in doc["files"].items():
        errors, warnings = verdict(name, entry["precision"], entry["check"])
        legacy = entry.get("runtime_compat", {}).get("tflite-runtime", {})
        if legacy.get("check"):
            where = f"{name} in {legacy.get('runtime')}"
            errs, warns = verdict(where, entry["precision"], legacy["check"])
            warnings += errs + warns
        elif legacy.get("status") == "fails":
            warnings.append(f"{name}: does not load in {legacy.get('runtime')}: {legacy.get('error')}")
        entry["errors"], entry["warnings"], entry["passed"] = errors, warnings, not errors


def _embed_compat(path: Path, entry: dict[str, Any]) -> None:
    """Re-embed the card with the measured runtime compatibility (atomic), and refresh the entry."""
    from edge.card import read_card

    card = read_card(path)
    data = path.read_bytes()
    write_model(path, data, card.with_updates(runtime_compat=entry["runtime_compat"]))
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = _sha256(path)


def _summarise(
    doc: dict[str, Any],
    run_dir: Path,
    schema: LabelSchema,
    keras_cache: dict[str, dict[str, np.ndarray]] | None,
    test: Any,
    log: Log,
    changed: set[str] | None = None,
    threads: int = 1,
    previous: dict[str, Any] | None = None,
) -> None:
    """Per-variant entries (a separate variant = its files together) and the top-level lists.

    Variants with a changed file are re-checked as the device runs them: ``edge.predict.Predictor``
    over ``edge.variants.discover``; the others keep their check from ``previous`` (the variants of
    convert.json as it was before this conversion: the file itself has been rewritten since).
    """
    previous = previous or {}
    variants: dict[str, Any] = {}
    discovered = None
    for vid, names in _group_variants(doc["files"]).items():
        entries = [doc["files"][n] for n in names]
        heads = sorted({h for e in entries for h in e["heads"]}, key=schema.head_names.index)
        v: dict[str, Any] = {
            "approach": entries[0]["approach"],
            "precision": entries[0]["precision"],
            "files": names,
            "bytes": sum(e["bytes"] for e in entries),
            "complete": set(heads) == set(schema.head_names),
        }
        if changed is not None and vid in changed and v["complete"] and test is not None and keras_cache:
            from edge.predict import Predictor
            from edge.variants import discover

            if discovered is None:
                errors: list[tuple[str, str]] = []
                discovered = discover(run_dir / "edge", errors=errors)
            if vid in discovered:
                probs = Predictor(discovered[vid], num_threads=threads).predict_array(test.images)
                kprobs: dict[str, np.ndarray] = {}
                for n in names:
                    stem = Path(n).name.rsplit(".", 2)[0]
                    kprobs.update(keras_cache.get(stem, {}))
                if set(kprobs) >= set(schema.head_names):
                    v["check"] = check_heads(probs, kprobs, test.labels, schema.head_names)
                    v["check"]["runtime"] = "edge.predict.Predictor"
        elif vid in previous and "check" in previous[vid] and previous[vid].get("files") == names:
            v["check"] = previous[vid]["check"]
        if "check" not in v and v["complete"] and len(entries) == 1:
            v["check"] = entries[0]["check"]
        v["warnings"] = [w for e in entries for w in e["warnings"]]
        v["errors"] = [x for e in entries for x in e["errors"]]
        if "check" in v and len(entries) > 1:
            # A separate variant's files were each checked alone; this is the pair as the device runs it.
            errs, warns = verdict(vid, v["precision"], v["check"])
            v["warnings"] += warns
            v["errors"] += errs
        variants[vid] = v
    doc["variants"] = variants
    file_warnings = [w for e in doc["files"].values() for w in e["warnings"]]
    doc["warnings"] = list(dict.fromkeys([w for w in doc["warnings"] if w.startswith("skipped")] + file_warnings))
    doc["errors"] = list(dict.fromkeys(
        [x for e in doc["files"].values() for x in e["errors"]] + [x for v in variants.values() for x in v["errors"]]
    ))
