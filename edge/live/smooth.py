"""Smoothed per-head results and change events.

Smoothing is an exponential average over *time*, not over frames: a frame that arrives ``dt``
seconds after the last one moves the average by ``1 - exp(-dt / tau)`` of the way to its own
probabilities. Dropped frames therefore change nothing but ``dt``: two results 0.3 s apart weigh
the same whether 0 or 8 frames were dropped between them, and the average equals the one a model
that saw only those frames would compute.

Change events use two thresholds (hysteresis): a head announces label L when L is the smoothed top
label with a score of at least ``min_score`` and at least ``margin`` above the label announced
before; it clears (label None) when the announced label's smoothed score falls below
``min_score - margin``. A label hovering around a threshold cannot flicker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class Smoother:
    """Time-based exponential average of each head's probabilities (time constant ``tau_s``;
    0 turns smoothing off)."""

    def __init__(self, tau_s: float = 0.5):
        if tau_s < 0:
            raise ValueError(f"the smoothing time constant must be >= 0. Received: tau_s={tau_s}")
        self.tau_s = tau_s
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame's probabilities are the average (after a reconnect)."""
        self._state: dict[str, np.ndarray] | None = None
        self._t = 0.0

    def update(self, probs: dict[str, np.ndarray], t: float) -> dict[str, np.ndarray]:
        """Fold in one frame's probabilities, taken at ``t`` seconds (any clock, increasing)."""
        if self._state is None or self.tau_s == 0:
            self._state = {h: np.asarray(p, np.float64).copy() for h, p in probs.items()}
        else:
            alpha = 1.0 - math.exp(-max(0.0, t - self._t) / self.tau_s)
            for h, p in probs.items():
                s = self._state[h]
                s += alpha * (np.asarray(p, np.float64) - s)
        self._t = t
        return self._state


@dataclass(frozen=True)
class Change:
    """A head's announced label changed (``label`` None: nothing passes the threshold any more)."""

    head: str
    label: str | None
    score: float
    previous: str | None


class ChangeTracker:
    """Turns smoothed probabilities into change events with hysteresis (see the module docstring)."""

    def __init__(self, classes: dict[str, tuple[str, ...]], min_score: float = 0.5, margin: float = 0.1,
                 nothing: str | None = None):
        if not 0 <= min_score <= 1 or not 0 <= margin <= 1:
            raise ValueError(f"min_score and margin must lie in [0, 1]. Received: min_score={min_score}, "
                             f"margin={margin}")
        self.classes = classes
        self.min_score = min_score
        self.margin = margin
        self.nothing = nothing
        """A class that means "no car here" (a model trained with a background class): never
        announced; when it is the top label and passes min_score, the announced label clears."""
        self.current: dict[str, str | None] = {h: None for h in classes}

    def update(self, smoothed: dict[str, np.ndarray]) -> list[Change]:
        changes = []
        for head, probs in smoothed.items():
            names = self.classes[head]
            top = int(np.argmax(probs))
            label, score = names[top], float(probs[top])
            cur = self.current[head]
            cur_score = float(probs[names.index(cur)]) if cur is not None else 0.0
            if label == self.nothing:
                if cur is not None and (score >= self.min_score or cur_score < self.min_score - self.margin):
                    changes.append(Change(head, None, cur_score, cur))
                    self.current[head] = None
                continue
            if label != cur and score >= self.min_score and (cur is None or score >= cur_score + self.margin):
                changes.append(Change(head, label, score, cur))
                self.current[head] = label
            elif cur is not None and cur_score < self.min_score - self.margin:
                changes.append(Change(head, None, cur_score, cur))
                self.current[head] = None
        return changes
