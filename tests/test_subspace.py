"""Per-head projections (train/subspace.py, ``--compose projected``): the trained heads cannot read
the other heads' components, and what is saved is the plain Dense heads."""

from __future__ import annotations

import numpy as np

from train.compose import AdditiveComponents
from train.subspace import (
    other_heads_basis,
    project_out,
    projected_kernels,
    projection_bases,
    shared_directions,
)


def _components() -> AdditiveComponents:
    rng = np.random.default_rng(0)
    comps = {"a": rng.normal(size=(3, 10)), "b": rng.normal(size=(4, 10)), "c": rng.normal(size=(2, 10))}
    known = {h: np.ones(len(c), bool) for h, c in comps.items()}
    known["b"][3] = False  # a class no full row holds: no direction
    return AdditiveComponents({h: c.astype(np.float32) for h, c in comps.items()}, known, 12)


def test_basis_spans_the_other_heads_centred_known_components():
    comps = _components()
    q = other_heads_basis(comps, "a")
    # b: 3 known classes -> 2 directions; c: 2 classes -> 1.
    assert q.shape == (10, 3) and np.allclose(q.T @ q, np.eye(3), atol=1e-5)
    for h in ("b", "c"):
        c = comps.components[h][comps.known[h]]
        diffs = c - c[0]
        assert np.allclose(project_out(diffs.T, q), 0, atol=1e-5), h
    # The head's own differences keep most of their length (random directions in 10-d).
    own = comps.components["a"] - comps.components["a"][0]
    assert np.linalg.norm(project_out(own.T, q)) > 0.3 * np.linalg.norm(own)
    assert set(projection_bases(comps, ("a", "c", "joint"))) == {"a", "c"}


def test_kernels_stay_projected_through_training_and_the_constraint_is_not_saved(tmp_path):
    import keras

    comps = _components()
    bases = projection_bases(comps, ("a", "b"))
    inp = keras.Input((10,), name="features")
    heads = keras.Model(inp, {h: keras.layers.Dense(k, activation="softmax", name=h)(inp) for h, k in (("a", 3), ("b", 4))})
    heads.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    y = {"a": rng.integers(0, 3, 64), "b": rng.integers(0, 4, 64)}
    with projected_kernels(heads, bases):
        heads.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for h in ("a", "b"):
        kernel = heads.get_layer(h).kernel.numpy()
        assert np.abs(kernel).max() > 0.05  # it trained
        assert np.allclose(bases[h].T @ kernel, 0, atol=1e-5), h
        assert heads.get_layer(h).kernel.constraint is None
    heads.save(tmp_path / "h.keras")
    back = keras.saving.load_model(tmp_path / "h.keras")
    assert back.get_layer("a").get_config()["kernel_constraint"] is None
    assert np.allclose(back.predict(x, verbose=0)["a"], heads.predict(x, verbose=0)["a"], atol=1e-6)


def test_training_with_projected_kernels_equals_training_on_projected_features():
    """The gradient and the kernel projected each step = the head trained on ``x (I - Q Q^T)``, folded."""
    import keras

    comps = _components()
    basis = projection_bases(comps, ("a",))["a"]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(96, 10)).astype(np.float32)
    y = rng.integers(0, 3, 96)

    def fit(inputs: np.ndarray, constrained: bool) -> np.ndarray:
        keras.utils.set_random_seed(0)
        inp = keras.Input((10,), name="features")
        init = keras.initializers.GlorotUniform(seed=3)
        model = keras.Model(inp, {"a": keras.layers.Dense(3, activation="softmax", name="a", kernel_initializer=init)(inp)})
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss={"a": "sparse_categorical_crossentropy"})
        if constrained:
            with projected_kernels(model, {"a": basis}):
                model.fit(inputs, {"a": y}, epochs=3, batch_size=16, shuffle=False, verbose=0)
            assert "apply_gradients" not in vars(model.optimizer)
        else:
            model.fit(inputs, {"a": y}, epochs=3, batch_size=16, shuffle=False, verbose=0)
        return model.get_layer("a").kernel.numpy()

    folded = project_out(fit(x - (x @ basis) @ basis.T, False), basis)
    assert np.allclose(fit(x, True), folded, atol=2e-5)


def test_new_pair_copies_swap_to_combinations_no_train_row_holds():
    from train.compose import augment_batch, fit_components

    rng = np.random.default_rng(0)
    sizes = {"a": 4, "b": 3}
    comps_true = {h: rng.normal(size=(k, 6)) for h, k in sizes.items()}
    # Train pairs: a0-b0, a0-b1, a1-b1, a2-b2, a3-b2, a3-b0 (6 of 12); a cell of b empty on one row.
    pairs = [(0, 0), (0, 1), (1, 1), (2, 2), (3, 2), (3, 0)]
    labels = {"a": np.array([p[0] for p in pairs for _ in range(5)], np.int32),
              "b": np.array([p[1] for p in pairs for _ in range(5)], np.int32)}
    x = sum(comps_true[h][labels[h]] for h in sizes).astype(np.float32)
    comps = fit_components(x, labels, sizes)
    assert {tuple(p) for p in comps.seen} == set(pairs)
    batch = {"a": labels["a"].copy(), "b": labels["b"].copy()}
    batch["b"][0] = -1
    out_x, out_l, valid = augment_batch(x, batch, comps, 8, np.random.default_rng(1), new_pairs_only=True)
    assert valid.all()
    for i in range(8, len(out_x)):  # the copies of fully labelled rows
        pair = (int(out_l["a"][i]), int(out_l["b"][i]))
        assert pair not in set(pairs), (i, pair)
    # The row with an empty cell swaps a (it has no pair) and keeps b empty.
    assert (out_l["b"][:8] == -1).all() and (out_l["a"][:8] != 0).all()
    # The copies are the additive model's: x - a_old + a_new or x - b_old + b_new.
    i = 8
    h = "a" if out_l["a"][i] != batch["a"][1] else "b"
    expected = x[1] + comps.components[h][out_l[h][i]] - comps.components[h][batch[h][1]]
    assert np.allclose(out_x[i], expected, atol=1e-4)


def test_residual_directions_hold_what_the_additive_fit_leaves_and_are_off_by_default():
    from train.compose import fit_components

    rng = np.random.default_rng(3)
    sizes = {"a": 3, "b": 3}
    comps_true = {h: rng.normal(size=(k, 8)) for h, k in sizes.items()}
    pairs = [(i, j) for i in range(3) for j in range(3)]
    labels = {"a": np.array([p[0] for p in pairs for _ in range(4)], np.int32),
              "b": np.array([p[1] for p in pairs for _ in range(4)], np.int32)}
    x = sum(comps_true[h][labels[h]] for h in sizes)
    assert len(fit_components(x, labels, sizes).residual) == 0  # exactly additive: nothing left
    bump = np.zeros(8)
    bump[7] = 5.0
    x = x + np.where((labels["a"] == 1) & (labels["b"] == 2), 1.0, 0.0)[:, None] * bump  # one pair's own detail
    comps = fit_components(x, labels, sizes)
    assert len(comps.residual) >= 1
    plain = projection_bases(comps, ("a",))["a"]
    with_residual = projection_bases(comps, ("a",), residual=True)["a"]
    assert plain.shape[1] == 2 and with_residual.shape[1] > 2
    assert np.linalg.norm(project_out(bump[:, None], with_residual)) < 0.7 * np.linalg.norm(bump)


def test_heads_that_never_vary_independently_share_directions():
    from train.compose import fit_components

    rng = np.random.default_rng(4)
    base = {"m": rng.normal(size=(6, 12)), "t": rng.normal(size=(3, 12))}
    pairs = [(m, t) for m in range(6) for t in range(3) if (m + t) % 2 == 0]
    m = np.array([p[0] for p in pairs for _ in range(3)])
    t = np.array([p[1] for p in pairs for _ in range(3)])
    x = base["m"][m] + base["t"][t]
    independent = fit_components(x, {"m": m, "t": t}, {"m": 6, "t": 3})
    assert shared_directions(independent) == 0
    # c and b are both functions of m (as colour and badge of a make) that never differ: their split is arbitrary.
    colour = badge = np.array([0, 0, 1, 1, 2, 2])
    three = fit_components(x, {"c": colour[m], "b": badge[m], "t": t}, {"c": 3, "b": 3, "t": 3})
    assert shared_directions(three) == 2
