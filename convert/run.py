"""Convert every model of a run folder, check each file, and write ``convert.json``.

``runs/NAME/models/<stem>.keras`` -> ``runs/NAME/edge/<stem>.<precision>.tflite`` where ``stem`` is
``multihead``, ``joint`` or ``separate.<head>``. Re-running converts only files whose source
``.keras`` (sha256) or settings changed, or whose output is missing or altered, unless ``force``.
Every write is atomic and ``convert.json`` is rewritten after each file, so a killed conversion
leaves complete files and a convert.json that describes exactly those.

``convert_run`` is four steps over one ``RunState``: ``plan`` (convert.plan), ``convert_and_check``,
``check_runtime_compat`` and ``summarise`` (convert.summary). ``write_tflite`` is the one place a
converted file is written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifacts.layout import RunLayout, model_name, tflite_stem
from convert.check import check_heads, verdict
from convert.data import CheckImages, check_batches
from convert.errors import ConvertError
from convert.plan import (
    CHECK_SPLIT,
    DEFAULT_CALIBRATION,
    CheckedFile,
    ConvertOptions,
    Job,
    Log,
    RunState,
    SourceModel,
    plan,
)
from convert.records import CheckRecord, ConvertFile, ConvertRecord, InputRecord, RuntimeCompat, SourceRecord
from convert.summary import DeviceCheck, refresh_verdicts, summarise
from convert.tflite import ConversionSettings
from edge.contract.card import INPUT_DTYPES, PRECISIONS, InputSpec, ModelCard
from edge.contract.schema import LabelSchema
from edge.io import file_sha256


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
) -> ConvertRecord:
    """Convert, check and record every model of ``run_dir``; returns convert.json's content.

    ``data`` overrides the dataset folder named in config.json (its test split checks every file,
    its train split calibrates int8). Raises ConvertError (one line) for a run with no models, an
    unknown approach, a missing dataset, no calibration images or a model that needs non-built-in
    ops. Files that fail their check are still written and listed in ``errors``; the CLI exits 1.
    ``allow_outside_paths`` (accept labels.csv image paths that are absolute or leave the dataset
    folder) defaults to config.json's value when the dataset is the run's own, else False.
    """
    options = ConvertOptions(tuple(dict.fromkeys(precisions)), calibration, force, threads, check_images, seed,
                             legacy, data, allow_outside_paths)
    state = plan(Path(run_dir), options, log or (lambda s: None))
    if state.todo:
        state.images = open_check_images(state)
        convert_and_check(state)
        check_runtime_compat(state)
    refresh_verdicts(state.doc)
    changed = {f"{e['variant']}.{e['precision']}" for e in (state.doc["files"][j.name] for j in state.todo)}
    summarise(state.doc, state.schema, state.previous.variants, changed,
              _device_check(state) if state.checked else None)
    state.save()
    return state.doc


# -- data -----------------------------------------------------------------------------------------


def open_check_images(state: RunState) -> CheckImages:
    """The run's dataset (``--data`` or config.json's), its check split and calibration records."""
    from convert.data import calibration_records, open_dataset, resolve_data_root

    opts, config = state.options, state.config
    data_root = resolve_data_root(str(opts.data if opts.data is not None else config.get("data", "")), state.run_dir)
    allow_outside_paths = opts.allow_outside_paths
    if allow_outside_paths is None:  # as the run was trained, for the run's own dataset only
        allow_outside_paths = config.get("allow_outside_paths") is True and _is_runs_dataset(data_root, state)
    ds = open_dataset(data_root, allow_outside_paths=allow_outside_paths)
    test_records = ds.split(CHECK_SPLIT)
    if opts.check_images is not None:
        test_records = test_records[: max(0, int(opts.check_images))]
    cal_records: tuple[Any, ...] = ()
    if any(job.settings.spec.calibrated for job in state.todo):
        cal_records = calibration_records(ds.split("train"), opts.calibration, opts.seed)
        if not cal_records:
            raise ConvertError(f"{data_root}: no calibration images (the train split is empty); int8 needs some")
    return CheckImages(ds, data_root, state.schema, CHECK_SPLIT, test_records, cal_records, state.doc["warnings"])


def _is_runs_dataset(data_root: Path, state: RunState) -> bool:
    """True if ``data_root`` is the dataset folder config.json names (``--data`` may name another)."""
    from convert.data import resolve_data_root

    try:
        return data_root.resolve() == resolve_data_root(str(state.config.get("data", "")), state.run_dir).resolve()
    except (ConvertError, OSError):
        return False


# -- convert and check ----------------------------------------------------------------------------


def convert_and_check(state: RunState) -> None:
    """Convert every planned file and check it against its Keras original, model by model."""
    from convert.tflite import exported

    by_source: dict[str, list[Job]] = {}
    for job in state.todo:
        by_source.setdefault(job.source.stem, []).append(job)
    for s in state.sources:
        if s.stem not in by_source:
            continue
        model = _load_keras(s.path)
        size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
        state.keras_probs[s.stem] = keras_head_probs(model, s, state.schema, state.images.test(size).images)
        with exported(model) as saved_model_dir:  # one export for every precision of the model
            for job in by_source[s.stem]:
                _convert_and_check_file(state, model, job, size, saved_model_dir)


def _convert_and_check_file(state: RunState, model: Any, job: Job, size: tuple[int, int],
                            saved_model_dir: str | None) -> None:
    from convert.runner import FileScores

    out_path = state.run_dir / job.name
    cal = state.images.calibration(size) if job.settings.spec.calibrated else None
    made = convert_one(model, job.source, job.settings, state.schema, str(state.config.get("backbone", "")),
                       state.doc["versions"], out_path, cal, _card_extra(state, job.source, size, cal),
                       saved_model_dir)
    test = state.images.test(size)
    kprobs = state.keras_probs[job.source.stem]
    scores = FileScores(out_path, test.n, num_threads=state.options.threads)
    for start, batch in check_batches(test.images):  # the next batches decode while this one runs
        scores.add(start, batch)
    outs, runtime = scores.outputs, scores.runtime
    check = check_heads(made.card.schema.head_probs(outs), kprobs, test.labels, state.schema.head_names)
    errors, warnings = verdict(job.name, job.settings.precision, check)
    state.checked[out_path] = CheckedFile(outs, size, made.card, kprobs)
    state.doc["files"][job.name] = entry = _file_entry(state, job, made, cal, check, runtime, errors, warnings)
    state.save()
    line = "  ".join(
        f"{h}: acc {m['accuracy']:.3f} (keras {m['keras_accuracy']:.3f}) agree {m['agreement']:.3f}"
        for h, m in check["heads"].items() if m["accuracy"] is not None
    )
    state.log(f"converted  {job.name}  {entry['bytes'] / 1e6:.2f} MB  {line}")
    for w in warnings:
        state.log(f"WARNING: {w}")
    for e in errors:
        state.log(f"ERROR: {e}")


def _card_extra(state: RunState, source: SourceModel, size: tuple[int, int], cal: np.ndarray | None) -> dict[str, Any]:
    """The card's run-specific facts (``ModelCard.extra``)."""
    return {
        "run": state.run_dir.name,
        "source": model_name(source.stem),
        "source_sha256": state.source_sha[source.stem],
        "image_size": list(size),
        "weights": state.config.get("weights"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"calibration": {"images": len(cal), "split": "train", "seed": state.options.seed}}
           if cal is not None else {}),
    }


def _file_entry(state: RunState, job: Job, made: ConvertedFile, cal: np.ndarray | None, check: CheckRecord,
                runtime: str, errors: list[str], warnings: list[str]) -> ConvertFile:
    """A converted file's convert.json entry: what it is, where it came from, how it checked."""
    s, card, out_path = job.source, made.card, state.run_dir / job.name
    entry = ConvertFile(
        variant=card.variant,
        approach=card.approach,
        heads=list(card.heads),
        precision=job.settings.precision,
        bytes=out_path.stat().st_size,
        sha256=file_sha256(out_path),
        source=SourceRecord(path=model_name(s.stem), sha256=state.source_sha[s.stem], bytes=s.path.stat().st_size),
        settings=job.settings.to_dict(),
        tensorflow=state.tf_version,
        input=InputRecord(dtype=card.input.dtype, scale=card.input.scale, zero_point=card.input.zero_point,
                          height=card.input.height, width=card.input.width),
        outputs=dict(card.outputs),
        output_dtypes=made.output_dtypes,
        ops=sorted(made.op_versions),
        op_versions=made.op_versions,
        convert_s=made.convert_s,
        check=check,
        passed=not errors,
        runtime_compat={"ai-edge-litert": RuntimeCompat(runtime=runtime, loads=True, status="ok")},
        warnings=warnings,
        errors=errors,
    )
    if cal is not None:
        entry["calibration_images"] = len(cal)
    return entry


def keras_head_probs(model: Any, source: SourceModel, schema: LabelSchema, images: Any) -> dict[str, np.ndarray]:
    """The Keras model's per-head probabilities on uint8 images (joint decoded into heads).

    ``images``: an array or a ``CheckStream``, run ``CHECK_BATCH`` rows at a time (whole batches of
    32, as ``predict`` cuts the whole split, so the figures are the same)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in source.output_keys}
    for _, batch in check_batches(images):
        for k, v in _keras_outputs(model, source, batch).items():
            parts[k].append(v)
    if not len(images):  # predict fails on no rows; one blank image gives each output's width
        blank = _keras_outputs(model, source, np.zeros((1, *images.shape[1:]), np.uint8))
        parts = {k: [v[:0]] for k, v in blank.items()}
    return schema.head_probs({k: np.concatenate(v) for k, v in parts.items()})


def _keras_outputs(model: Any, source: SourceModel, batch: np.ndarray) -> dict[str, np.ndarray]:
    """float32 scores per output key of the Keras model on a uint8 batch."""
    out = model.predict(batch.astype(np.float32), batch_size=32, verbose=0)
    if not isinstance(out, dict):
        out = {source.output_keys[0]: out} if len(source.output_keys) == 1 else dict(zip(source.output_keys, out, strict=True))
    return {k: np.asarray(out[k], np.float32) for k in source.output_keys}


def _load_keras(path: Path) -> Any:
    from artifacts.keras_io import KerasModelError, load_model

    try:
        return load_model(path)
    except KerasModelError as e:
        raise ConvertError(str(e)) from None


def _input_spec(sig_inputs: dict[str, Any], size: tuple[int, int]) -> InputSpec:
    if len(sig_inputs) != 1:
        raise ConvertError(f"converted model must have one input. Received: {sorted(sig_inputs)}")
    t = next(iter(sig_inputs.values()))
    if t.dtype not in INPUT_DTYPES:
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


@dataclass(frozen=True)
class ConvertedFile:
    """What ``convert_one`` made: the card it embedded and what the converter wrote."""

    card: ModelCard
    op_versions: dict[str, int]
    output_dtypes: dict[str, str]
    convert_s: float


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
) -> ConvertedFile:
    """Convert one model at one precision and write it with its card."""
    from convert.errors import UnsupportedOpError
    from convert.inspect import map_outputs, non_builtin_ops, op_versions, signature_info
    from convert.tflite import convert_keras
    from edge.contract.approaches import output_size

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
    n_classes = {k: output_size(schema, k) for k in source.output_keys}
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
    write_tflite(out_path, data, card)
    return ConvertedFile(card, ops, {k: sig.outputs[v].dtype for k, v in outputs.items()}, round(convert_s, 3))


def write_tflite(path: Path, data: bytes, card: ModelCard) -> None:
    """The one place a converted file is written: ``data`` with ``card`` embedded, atomically.

    Both writes of a file pass here: the first, and the re-embedding with its runtime compatibility.
    The file gets standard TFLite Metadata (one classification output per head, label files) beside
    the card; re-embedding replaces the metadata it already has.
    """
    from convert.metadata import write_model_with_metadata

    write_model_with_metadata(path, data, card)


# -- runtime compatibility ------------------------------------------------------------------------


def check_runtime_compat(state: RunState) -> None:
    """Run every file converted now in tflite-runtime 2.14 too, and check it there the same way."""
    from convert.compat import run_legacy, unchecked

    by_size: dict[tuple[int, int], list[Path]] = {}
    for path, checked in state.checked.items():
        by_size.setdefault(checked.size, []).append(path)
    for size, paths in by_size.items():
        test = state.images.test(size)
        if state.options.legacy:
            results = run_legacy(paths, test.images)
        else:
            results = {p: unchecked("skipped (--no-legacy)") for p in paths}
        for path, compat in results.items():
            _record_legacy(state, path, compat, test.labels)
    state.save()


def _record_legacy(state: RunState, path: Path, compat: dict[str, Any], labels: dict[str, np.ndarray]) -> None:
    from convert.compat import LEGACY_KEY, compare_outputs

    name = path.relative_to(state.run_dir).as_posix()
    entry = state.doc["files"][name]
    checked = state.checked[path]
    theirs = compat.pop("outputs", None)
    if theirs is not None:
        # The same check as in ai-edge-litert: against Keras and the labels, same bounds.
        compat["vs_ai_edge_litert"] = compare_outputs(checked.outputs, theirs)
        compat["check"] = check_heads(checked.card.schema.head_probs(theirs), checked.keras_probs, labels,
                                      state.schema.head_names)
        errs, _ = verdict(name, entry["precision"], compat["check"])
        compat["status"] = "ok" if not errs else "disagrees"
    entry["runtime_compat"][LEGACY_KEY] = compat
    if state.options.legacy:
        _embed_compat(path, entry)
        state.log(f"tflite-runtime  {name}: {compat.get('status')}")


CARD_COMPAT_KEYS = ("runtime", "loads", "status", "missing_ops", "error")
"""What the card carries of each runtime's compatibility: the device's card reader accepts only
these flat fields (``edge.contract.cardcheck``); the checks against Keras stay in convert.json."""


def _embed_compat(path: Path, entry: ConvertFile) -> None:
    """Re-embed the card with the measured runtime compatibility (atomic), and refresh the entry."""
    from edge.contract.card_archive import read_card

    card_compat = {rt: {k: c[k] for k in CARD_COMPAT_KEYS if k in c} for rt, c in entry["runtime_compat"].items()}
    card = read_card(path)
    write_tflite(path, path.read_bytes(), card.with_updates(runtime_compat=card_compat))
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = file_sha256(path)


# -- the variants as the device runs them ---------------------------------------------------------


def _device_check(state: RunState) -> DeviceCheck:
    """Checks a variant through ``edge.runtime.predict.Predictor`` over ``edge.runtime.variants.discover`` (a
    separate variant's files together), on the check images of the last model converted."""
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    size = next(reversed(state.checked.values())).size
    test = state.images.test(size)
    discovered: dict[str, Any] = {}

    def check(vid: str, names: list[str]) -> dict[str, Any] | None:
        if not discovered:
            discovered.update(discover(RunLayout(state.run_dir).edge_dir, errors=[]))
        if vid not in discovered:
            return None
        predictor = Predictor(discovered[vid], num_threads=state.options.threads)
        parts = [predictor.predict_array(batch) for _, batch in check_batches(test.images)]
        probs = {h: np.concatenate([p[h] for p in parts]) for h in parts[0]} if parts else predictor.predict_array(
            np.zeros((0, *test.images.shape[1:]), np.uint8))
        kprobs: dict[str, np.ndarray] = {}
        for n in names:
            kprobs.update(state.keras_probs.get(tflite_stem(n), {}))
        if not set(kprobs) >= set(state.schema.head_names):
            return None
        result = check_heads(probs, kprobs, test.labels, state.schema.head_names)
        result["runtime"] = "edge.runtime.predict.Predictor"
        return result

    return check
