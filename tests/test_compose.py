"""Composed heads (train/compose.py) and the pair-held-out folds (train/pairfold.py).

The known-answer case: features that are exactly additive, a weak cue for head ``a`` and a strong
one for head ``b``, and train pairs that nearly tie ``a`` to ``b``. Plain heads read ``a`` off
``b``'s cue and name the unseen pairs wrongly; composed heads name them.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge.contract.catalogue import CATALOGUE_FILE, write_catalogue
from edge.contract.schema import LabelSchema
from train.compose import AdditiveComponents, augment_batch, compose_applies, composed_dataset, fit_components
from train.data import Arrays, order_for_epochs
from train.fit import TrainConfig, TrainError
from train.pairfold import held_out_rows, make_folds
from train.records import train_key_errors


def _additive(n_per: dict[tuple[int, int], int], seed: int, dim: int = 12) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows of ``c + A[a] + B[b] + noise``: ``A`` weak (norm 1), ``B`` strong (norm 4), per pair counts."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(7).normal(size=(dim, dim)))[0]
    comp_a, comp_b = basis[:4] * 1.0, basis[4:8] * 4.0
    a = np.concatenate([np.full(k, p[0]) for p, k in n_per.items()])
    b = np.concatenate([np.full(k, p[1]) for p, k in n_per.items()])
    x = 2.0 + comp_a[a] + comp_b[b] + rng.normal(scale=0.35, size=(len(a), dim))
    return x.astype(np.float32), {"a": a.astype(np.int32), "b": b.astype(np.int32)}


def _kat_data() -> tuple[LabelSchema, Arrays, Arrays, np.ndarray, np.ndarray]:
    # Train: the diagonal pairs, many rows; a ring of bridge pairs, few rows (they connect the classes).
    train_pairs = {**{(i, i): 120 for i in range(4)}, **{(i, (i + 1) % 4): 6 for i in range(4)}}
    unseen_pairs = {(i, (i + 2) % 4): 20 for i in range(4)}
    xt, lt = _additive(train_pairs, 0)
    xu, lu = _additive(unseen_pairs, 1)
    names = {"a": ("a0", "a1", "a2", "a3"), "b": ("b0", "b1", "b2", "b3")}
    rows = [(names["a"][i], names["b"][j]) for i, j in train_pairs]
    schema = LabelSchema.from_labels(("a", "b"), rows)
    train = Arrays(xt, lt, np.full(len(xt), -1, np.int32))
    unseen = Arrays(xu, lu, np.full(len(xu), -1, np.int32))
    return schema, train, unseen, xt, xu


def _joint_accuracy(cfg: TrainConfig, schema: LabelSchema, train: Arrays, x_eval: np.ndarray, eval_: Arrays) -> float:
    import keras

    from train.fit import compile_heads, fit_heads
    from train.models import make_head

    keras.utils.set_random_seed(cfg.seed)
    inp = keras.Input((train.images.shape[1],), name="features")
    heads = keras.Model(inp, {h: make_head(h, 4, cfg.seed)(inp) for h in ("a", "b")})
    compile_heads(heads, cfg, ("a", "b"), train.n)
    fit_heads(heads, cfg, schema, ("a", "b"), train.images, train, None, None, cfg.epochs)
    out = heads.predict(x_eval, verbose=0)
    right = np.ones(len(x_eval), bool)
    for h in ("a", "b"):
        right &= np.argmax(out[h], axis=1) == eval_.labels[h]
    return float(right.mean())


@pytest.mark.parametrize("mode,copies", [("additive", 2), ("projected", 2), ("projected", 0), ("projected-residual", 2)])
def test_known_answer_plain_heads_fail_an_unseen_pair_composed_heads_name_it(mode, copies):
    schema, train, unseen, _, xu = _kat_data()
    base = dict(data="d", out="o", epochs=10, batch_size=32, learning_rate=0.03)
    plain = _joint_accuracy(TrainConfig(**base, compose="none"), schema, train, xu, unseen)
    composed = _joint_accuracy(TrainConfig(**base, compose=mode, compose_copies=copies), schema, train, xu, unseen)
    # Measured: plain 0.0; additive 0.875, projected 0.9125 (copies 2 and 0; the same seed and settings).
    assert plain <= 0.25, plain
    assert composed >= 0.75, (mode, copies, composed)


def test_components_recover_an_additive_model_with_three_heads_and_empty_cells():
    rng = np.random.default_rng(0)
    sizes = {"a": 3, "b": 4, "c": 2}
    comps = {h: rng.normal(size=(k, 6)) for h, k in sizes.items()}
    n = 600
    labels = {h: rng.integers(0, k, n).astype(np.int32) for h, k in sizes.items()}
    x = 1.0 + sum(comps[h][labels[h]] for h in sizes)
    labels["c"][::5] = -1  # empty cells: those rows do not enter the fit
    fit = fit_components(x, labels, sizes)
    for h in sizes:
        # Differences between classes are what a swap uses (the gauge cancels out).
        assert np.allclose(fit.components[h] - fit.components[h][0], comps[h] - comps[h][0], atol=1e-6), h
        assert fit.known[h].all()


def test_augment_batch_swaps_one_head_keeps_empty_cells_and_skips_unswappable_rows():
    comps = AdditiveComponents(
        components={"a": np.eye(3, 4, dtype=np.float32), "b": 10 * np.eye(2, 4, k=2, dtype=np.float32)},
        known={"a": np.array([True, True, True]), "b": np.array([True, True])}, pairs=4)
    x = np.zeros((3, 4), np.float32)
    labels = {"a": np.array([0, 2, -1], np.int32), "b": np.array([1, -1, -1], np.int32)}
    out_x, out_l, valid = augment_batch(x, labels, comps, 4, np.random.default_rng(0))
    assert out_x.shape == (12, 4)
    assert valid.tolist() == [True] * 8 + [False] * 4  # row 2 has no label to swap
    for i in range(8):
        src = i // 4
        changed = [h for h in ("a", "b") if out_l[h][i] != labels[h][src]]
        assert len(changed) == 1
        h = changed[0]
        expected = comps.components[h][out_l[h][i]] - comps.components[h][labels[h][src]]
        assert np.allclose(out_x[i], expected)
    assert (out_l["b"][4:8] == -1).all() and (out_l["a"][4:8] != 2).all()  # row 1: only a swaps


def test_composed_batches_are_a_function_of_seed_and_step_so_a_resumed_run_sees_the_same():
    x, labels = _additive({(0, 0): 20, (1, 1): 20, (0, 1): 5, (1, 0): 5}, 0)
    kw = dict(outputs=("a", "b"), num_classes={"a": 4, "b": 4}, batch_size=8, seed=3)
    from train.compose import ComposeSettings

    whole = list(composed_dataset(x, labels, first_epoch=0, last_epoch=2, settings=ComposeSettings(), **kw))
    resumed = list(composed_dataset(x, labels, first_epoch=1, last_epoch=2, settings=ComposeSettings(), **kw))
    assert len(whole) == 2 * len(resumed)
    for (a, ya, wa), (b, yb, wb) in zip(whole[len(resumed):], resumed, strict=True):
        assert np.array_equal(a.numpy(), b.numpy()) and np.array_equal(ya["a"].numpy(), yb["a"].numpy())
        assert np.array_equal(wa["b"].numpy(), wb["b"].numpy())
    first_x, _, first_w = whole[0]
    # The first rows of a batch are the plain batch (epoch_order), then 2 copies per row at weight 1.5.
    order = order_for_epochs(len(x), 8, 3, 0, 1)[:8]
    assert np.allclose(first_x.numpy()[:8], x[order])
    assert np.allclose(first_w["a"].numpy(), [1.0] * 8 + [1.5] * 16)


def test_compose_setting_is_checked_and_never_applies_to_joint():
    assert compose_applies("additive", ("make", "type")) and not compose_applies("additive", ("joint",))
    assert not compose_applies("none", ("make",))
    with pytest.raises(TrainError, match="compose='sum'"):
        TrainConfig(data="d", out="o", compose="sum")
    with pytest.raises(TrainError, match="needs a frozen base"):
        TrainConfig(data="d", out="o", compose="additive", freeze_base=False)


def test_pair_folds_hold_out_only_pairs_whose_labels_keep_a_partner():
    # Three heads; x0 is seen with one (y, z) only: none of its pairs may be held out.
    rows = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 0), (3, 2, 0), (3, 0, 1),
            (1, 2, 1), (3, 1, 0), (2, 0, 0)]
    reps = 3
    train = {h: np.array([r[j] for r in rows for _ in range(reps)], np.int32) for j, h in enumerate("xyz")}
    train["z"][-1] = -1  # an empty cell: that row belongs to no pair and always trains
    folds = make_folds(train, None, folds=3, per_fold=3, seed=0)
    assert folds and all(len(f) <= 3 for f in folds)
    held = [p for f in folds for p in f]
    assert len(held) == len(set(held))  # disjoint
    assert all(p[0] != 0 for p in held)  # x0 has a single partner
    full = np.stack([train[h] for h in "xyz"], axis=1)
    for fold in folds:
        keep = ~held_out_rows(train, fold)
        assert keep[-1]
        for j, h in enumerate("xyz"):
            for p in fold:  # every label of a held-out pair is still in the fold's train pairs
                assert ((full[keep][:, j] == p[j]) & (full[keep] >= 0).all(axis=1)).any(), (h, p)
    # With val labels, only pairs that have val rows are held out (others cannot be scored).
    val = {h: np.array([rows[4][j], rows[9][j]], np.int32) for j, h in enumerate("xyz")}
    only = [p for f in make_folds(train, val, folds=3, per_fold=3, seed=0) for p in f]
    assert set(only) <= {rows[4], rows[9]}


def test_auto_picks_the_best_held_out_folds_among_those_that_keep_the_seen_pairs():
    from train.autocompose import choose

    scores = {"none": {"unseen": 0.30, "seen": 0.960}, "additive": {"unseen": 0.55, "seen": 0.955},
              "projected": {"unseen": 0.58, "seen": 0.951}, "projected-residual": {"unseen": 0.65, "seen": 0.940}}
    # projected-residual names the most held-out pairs but loses 2 points of seen pairs: not allowed.
    assert choose(scores) == "projected"
    scores["projected-residual"]["seen"] = 0.9505  # within 1 point of plain heads
    assert choose(scores) == "projected-residual"
    # Nothing beats plain heads on held-out pairs, or every candidate loses the seen ones: none.
    assert choose({m: {"unseen": 0.30 if m == "none" else 0.29, "seen": 0.96} for m in scores}) == "none"
    assert choose({m: {"unseen": 0.30 if m == "none" else 0.60, "seen": 0.96 if m == "none" else 0.90}
                   for m in scores}) == "none"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["additive", "projected", "auto"])
def test_run_records_compose_and_folds_and_add_head_inherits_it(tmp_path, caplog, mode):
    """A tiny frozen run with --compose additive (projected): config.json and train.json carry it,
    train.json the folds; add-head trains its new head the same way."""
    import logging

    from test_add_head import _with_colour
    from train_fixtures import write_folder

    from train.add_head import add_heads
    from train.fit import run_training

    folder = write_folder(tmp_path / "ds", n=48)
    with open(folder / "labels.csv", newline="") as f:
        combos = {(r["make"], r["type"]) for r in csv.DictReader(f)}
    write_catalogue(folder / CATALOGUE_FILE, ("make", "type"), combos)
    run, new = tmp_path / "run", tmp_path / "run_colour"
    cfg = TrainConfig(data=str(folder), out=str(run), backbone="tiny_cnn", image_size=(32, 32), batch_size=16,
                      epochs=2, freeze_base=True, approaches=("multihead",), verbose=0, weights="none",
                      warmup_epochs=0, compose=mode)
    with caplog.at_level(logging.INFO, logger="train"):
        record = run_training(cfg)
    assert json.loads((run / "config.json").read_text())["compose"] == mode
    if mode == "auto":
        # Chosen on the folds (decoded among the catalogue) before training; add-head inherits the choice.
        auto = record["compose"].pop("auto")
        assert set(auto["folds"]) == {"none", "additive", "projected", "projected-residual"}
        assert auto["decode"] == "catalogue" and auto["chosen"] == record["compose"]["mode"]
        assert any(r.message.startswith("compose auto:") for r in caplog.records)
        mode = auto["chosen"]
    if mode != "none":
        assert sum(f"compose {mode}" in r.message for r in caplog.records) >= 2  # the run and its folds
    assert record["compose"] == {"mode": mode, "copies": 2, "weight": 3.0}
    assert record["pair_folds"]["folds"] >= 1 and record["pair_folds"]["held_out"][0]
    assert record["variants"]["multihead"]["pair_folds"]["unseen"]["n_all_labelled"] > 0
    # The folder's catalogue: every split and the folds also score the joint answer decoded among it.
    assert record["catalogue"] == {"combinations": len(combos), "skipped": 0}
    multihead = record["variants"]["multihead"]
    for m in [*multihead["metrics"].values(), *(multihead["pair_folds"][k] for k in ("unseen", "seen"))]:
        assert 0.0 <= m["joint_accuracy_catalogue"] <= 1.0
    assert train_key_errors(record) == []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train"):
        rec = add_heads(run, _with_colour(folder, tmp_path / "ds_colour"), ["colour"], new, log=lambda s: None)
    assert mode == "none" or any(f"compose {mode}" in r.message for r in caplog.records)
    assert json.loads((new / "config.json").read_text())["compose"] == mode
    assert rec["compose"]["mode"] == mode and "pair_folds" not in rec
    assert train_key_errors(rec) == []


def test_report_shows_the_fold_validation_and_the_compose_setting(tmp_path):
    from report_fixtures import write_run

    from report.render.markdown import approach_table, load_run, setup_lines

    run = write_run(tmp_path / "run")
    doc = json.loads((run / "train.json").read_text())
    split = doc["variants"]["multihead"]["metrics"]["test"]
    doc["variants"]["multihead"]["pair_folds"] = {"unseen": {**split, "joint_accuracy": 0.5219}, "seen": split,
                                                  "wall_s": 3.0}
    doc["pair_folds"] = {"folds": 1, "pairs_per_fold": 8, "seed": 0, "held_out": [["Eskel/Van", "Aldor/SUV"]]}
    doc["catalogue"] = {"combinations": 108, "skipped": 0}
    doc["variants"]["multihead"]["metrics"]["test_unseen"]["joint_accuracy_catalogue"] = 0.7731
    (run / "train.json").write_text(json.dumps(doc))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "compose": "additive"}))
    data = load_run(run)
    table = approach_table(data).to_markdown()
    row = next(line for line in table.splitlines() if "joint accuracy (fold validation, held-out pairs)" in line)
    assert "52.19 %" in row
    row = next(line for line in table.splitlines() if "catalogue decode (unseen combinations)" in line)
    assert "77.31 %" in row
    lines = "\n".join(setup_lines(data))
    assert "compose=additive" in lines and "Eskel/Van, Aldor/SUV" in lines


def test_compose_markdown_puts_plain_and_composed_side_by_side():
    from report.experiments.compose import compose_markdown

    def run(seed, joint):
        split = {"heads": {"make": 0.9, "type": 0.8}, "joint": joint, "joint_catalogue": joint + 0.1, "n": 10}
        return {"seed": seed, "approaches": {"multihead": {
            "test": split, "test_unseen": split, "fold_unseen": split, "fold_seen": split, "params": 1000,
            "trained_params": 10, "train_wall_s": 5.0, "feature_extract_s": 1.0, "head_train_s": 4.0,
            "folds_wall_s": 9.0}}}

    record = {"backbone": "b", "image_size": 128, "epochs": 12, "data": "d", "seeds": [0, 1], "approaches": ["multihead"],
              "heads": ["make", "type"], "settings": "s",
              "modes": {"none": {"runs": [run(0, 0.4), run(1, 0.5)]}, "additive": {"runs": [run(0, 0.7), run(1, 0.8)]}}}
    text = compose_markdown(record)
    row = next(line for line in text.splitlines() if line.startswith("| test_unseen") and "joint" in line)
    assert "45.0 (40.0..50.0)" in row and "75.0 (70.0..80.0)" in row and "+30.0" in row
    row = next(line for line in text.splitlines() if line.startswith("| test_unseen") and "catalogue" in line)
    assert "55.0 (50.0..60.0)" in row and "85.0 (80.0..90.0)" in row
    # A dataset without a catalogue: no such row.
    for mode in record["modes"].values():
        for r in mode["runs"]:
            for split in ("test", "test_unseen", "fold_unseen", "fold_seen"):
                r["approaches"]["multihead"][split]["joint_catalogue"] = None
    assert not [line for line in compose_markdown(record).splitlines() if line.startswith("|") and "catalogue" in line]
    assert "| parameters (deployed) | 1,000 | 1,000 |" in text


def test_fold_validation_reads_a_memory_mapped_store_a_batch_at_a_time(tmp_path, monkeypatch):
    # A fold trains on most train rows: copying them (and the val rows) per fold made the 60k-image
    # run's peak RSS grow 14.7 KB per image. On a memory-mapped store a fold is a RowSubset, read
    # one batch at a time; its figures equal those of the same features in memory.
    from datasets.pipeline import RowSubset
    from train.pairfold import fold_validation

    schema, train, _, xt, _ = _kat_data()
    xv, lv = _additive({**{(i, i): 10 for i in range(4)}, **{(i, (i + 1) % 4): 4 for i in range(4)}}, 2)
    val = Arrays(xv, lv, np.full(len(xv), -1, np.int32))
    folds = make_folds(train.labels, val.labels, folds=2, per_fold=1, seed=0)
    assert folds
    cfg = TrainConfig(data="d", out="o", epochs=2, batch_size=32, learning_rate=0.03, compose="none")
    in_memory = fold_validation(cfg, schema, [("a", "b")], xt, train, xv, val, folds)

    np.save(tmp_path / "train.npy", xt)
    np.save(tmp_path / "val.npy", xv)
    reads: list[int] = []
    getitem = RowSubset.__getitem__
    monkeypatch.setattr(RowSubset, "__getitem__", lambda self, i: reads.append(len(np.atleast_1d(i))) or getitem(self, i))
    monkeypatch.setattr(RowSubset, "__array__", lambda *a, **k: pytest.fail("a fold's rows were copied whole"))
    mapped = fold_validation(cfg, schema, [("a", "b")], np.load(tmp_path / "train.npy", mmap_mode="r"), train,
                             np.load(tmp_path / "val.npy", mmap_mode="r"), val, folds)
    assert reads and max(reads) <= cfg.batch_size
    for part in ("unseen", "seen"):
        assert mapped[part]["joint_accuracy"] == pytest.approx(in_memory[part]["joint_accuracy"], abs=1e-9)
        for h in ("a", "b"):
            assert mapped[part]["heads"][h]["loss"] == pytest.approx(in_memory[part]["heads"][h]["loss"], rel=1e-5)
