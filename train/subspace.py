"""Heads that cannot read the other heads' attributes: per-head projections (``--compose projected``).

``--compose additive`` (train/compose.py) teaches a head to ignore the other heads' cues by
showing it swapped copies; some of the shortcut survives the sampling. ``projected`` removes it
linearly as well. From the same fitted components (train pair means = ``c + sum_h a_h[label_h]``),
head ``h``'s kernel is kept orthogonal to the span of the *other* heads' centred components (for
make/type: the 7 type directions for the make head, the 47 make directions for the type head), so
``h``'s logits cannot move when another attribute changes additively. The augmentation runs
alongside (``compose_copies``/``compose_weight``; 0 copies: the projection alone).

During training only, each kernel's gradient is projected before the optimizer sees it, and the
kernel after every step (and once before the first). Together that is exactly training the head on
``x (I - Q Q^T)`` (Adam's moments see the same gradients) with the projection folded into the
kernel: the trained kernel already lies in the allowed subspace, so the saved model is the plain
Dense heads, with no extra layer, no extra parameter and no latency cost, and a checkpoint or a
resumed run sees the same kernels as an uninterrupted one. Projecting the kernel alone is not
enough: Adam's second moments would then fill with the gradient along the removed directions (the
shortcut the head keeps asking for) and shrink every allowed step (measured, seed 0: 2-3 points of
seen joint lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from train.compose import AdditiveComponents

log = logging.getLogger(__name__)

RANK_TOLERANCE = 1e-6
"""Singular values below this fraction of the largest are not directions (a head's components
span at most its classes - 1 dimensions; the centring leaves one dependency)."""


def other_heads_basis(comps: AdditiveComponents, head: str) -> np.ndarray:
    """Orthonormal basis (d, r) of the span of every other head's centred components; r may be 0.

    Only known classes count (a class no fully labelled train row holds has no component)."""
    d = int(next(iter(comps.components.values())).shape[1])
    blocks = []
    for other, c in comps.components.items():
        known = c[comps.known[other]].astype(np.float64)
        if other != head and len(known) >= 2:
            blocks.append(known - known.mean(axis=0))
    if not blocks:
        return np.zeros((d, 0), np.float32)
    _, sv, vt = np.linalg.svd(np.concatenate(blocks), full_matrices=False)
    rank = int((sv > sv[0] * RANK_TOLERANCE).sum()) if sv.size and sv[0] > 0 else 0
    return np.ascontiguousarray(vt[:rank].T, dtype=np.float32)


def projection_bases(comps: AdditiveComponents, outputs: Sequence[str], residual: bool = False,
                     ) -> dict[str, np.ndarray]:
    """Per output (a head of ``comps``): the directions its kernel must not read. Outputs that are not
    heads of ``comps`` (none today: joint never composes) get none.

    ``residual``: also the directions of the pair means' residual (``comps.residual``: what no
    head's component explains): ``--compose projected-residual``. It gained 6 points of fold
    held-out joint on the default data but cost 9 points of test joint on the three-head set,
    whose badge is drawn differently on each body, so the badge's own signal lies in the residual
    (docs/training.md); ``--compose auto`` picks it only where the folds say it pays."""
    out = {}
    for o in outputs:
        if o not in comps.components:
            continue
        q = other_heads_basis(comps, o)
        if residual and comps.residual is not None and len(comps.residual):
            r = comps.residual.T.astype(np.float64)
            r = r - q @ (q.T @ r)
            u, sv, _ = np.linalg.svd(r, full_matrices=False)
            q = np.concatenate([q, u[:, sv > sv[0] * RANK_TOLERANCE].astype(np.float32)], axis=1) if sv.size else q
        out[o] = np.ascontiguousarray(q, dtype=np.float32)
    return out


def project_out(kernel: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``(I - Q Q^T) W``: the kernel with the rows' component along ``basis`` (Q, (d, r)) removed."""
    return kernel - basis @ (basis.T @ kernel)


class ProjectOut:
    """A Keras variable constraint: ``w -> w - Q (Q^T w)`` (never serialised: set on the variable only)."""

    def __init__(self, basis: np.ndarray) -> None:
        self.basis = np.asarray(basis, np.float32)

    def __call__(self, w: Any) -> Any:
        from keras import ops

        q = ops.convert_to_tensor(self.basis, dtype=w.dtype)
        return w - ops.matmul(q, ops.matmul(ops.transpose(q), w))


@contextmanager
def projected_kernels(heads: Any, bases: Mapping[str, np.ndarray]) -> Iterator[None]:
    """While open, each output layer ``o`` of ``heads`` (a compiled model of Dense heads) trains as
    if its input were projected off ``bases[o]``: the kernel is projected now, its gradient before
    every optimizer step and the kernel after it. On exit both are removed (set on the variable and
    the optimizer instance only: the layers' and the optimizer's configs never held them, so saved
    files load without them)."""
    kernels = []
    by_variable: dict[int, ProjectOut] = {}
    for o, basis in bases.items():
        if basis.shape[1] == 0:
            continue
        kernel = heads.get_layer(o).kernel
        kernel.assign(project_out(np.asarray(kernel.numpy(), np.float32), basis))
        kernel.constraint = ProjectOut(basis)
        by_variable[id(kernel)] = kernel.constraint
        kernels.append(kernel)
    optimizer = heads.optimizer
    apply_gradients = optimizer.apply_gradients

    def projected_gradients(grads_and_vars: Any) -> Any:
        return apply_gradients([(g if g is None or id(v) not in by_variable else by_variable[id(v)](g), v)
                                for g, v in grads_and_vars])

    if kernels:
        # An attribute of this instance (traced into the train function fit builds), not a subclass.
        optimizer.apply_gradients = projected_gradients
        heads.train_function = None
    try:
        yield
    finally:
        for kernel in kernels:
            kernel.constraint = None
        if kernels:
            del optimizer.apply_gradients
            heads.train_function = None


def _rank(m: np.ndarray) -> int:
    sv = np.linalg.svd(m, compute_uv=False) if m.size else np.zeros(0)
    return int((sv > sv[0] * RANK_TOLERANCE).sum()) if sv.size and sv[0] > 0 else 0


def shared_directions(comps: AdditiveComponents) -> int:
    """How many directions the heads' component spans share (sum of each head's rank minus the rank
    of all together): above 0 when some attributes never vary independently in train (two heads
    that are both functions of a third attribute), so the split between their components is
    arbitrary and a projection removes part of a head's own signal."""
    blocks = []
    for h, c in comps.components.items():
        known = c[comps.known[h]].astype(np.float64)
        if len(known) >= 2:
            blocks.append(known - known.mean(axis=0))
    if not blocks:
        return 0
    return sum(_rank(b) for b in blocks) - _rank(np.concatenate(blocks))


def log_bases(bases: Mapping[str, np.ndarray], d: int, comps: AdditiveComponents | None = None) -> None:
    """One line: how many of the ``d`` feature directions each head may not read; a warning when the
    heads' components share directions (``shared_directions``)."""
    log.info("compose projected: directions removed per head (of %d): %s", d,
             ", ".join(f"{o} {b.shape[1]}" for o, b in bases.items()))
    shared = shared_directions(comps) if comps is not None else 0
    if shared > 0:
        log.warning(f"compose projected: the heads' components share {shared} direction(s): some attributes "
                    "never vary independently in train, and removing another head's directions removes part of a "
                    "head's own signal (measured on such a set: 3-5 points of seen joint lost); --compose additive "
                    "does not have this cost")
