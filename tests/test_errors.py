"""The one error contract: every known failure is an ``edge.errors.PolyheadError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from edge.errors import PolyheadError

PACKAGES = ("edge", "datasets", "train", "convert", "report")
NOT_FAILURES = {"train.fit.TrainingInterrupted"}
"""Exceptions that are no failure: Ctrl-C during training (saved; the CLI exits 130)."""


def _exception_classes():
    """Every exception class the project's modules define (private ones never leave their module)."""
    for package in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            module = importlib.import_module(info.name)
            for name, cls in vars(module).items():
                if (inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == module.__name__
                        and not name.startswith("_")):
                    yield f"{module.__name__}.{name}", cls


def test_every_known_error_class_is_a_polyhead_error():
    found = dict(_exception_classes())
    assert {"edge.preprocess.ImageError", "train.fit.TrainError", "report.pipeline.PipelineError"} <= set(found)
    assert [name for name, cls in found.items()
            if name not in NOT_FAILURES and not issubclass(cls, PolyheadError)] == []
