"""The one error contract: every known failure is an ``edge.errors.PolyheadError``, every CLI prints
it as exactly one line, and library progress goes through ``logging`` that the CLIs configure."""

from __future__ import annotations

import importlib
import inspect
import logging
import pkgutil
import sys

import pytest
from click.testing import CliRunner

from edge.errors import PolyheadError
from edge.log import PACKAGES, configure_logging

NOT_FAILURES = {"train.config.TrainingInterrupted", "edge.modelcheck_graph.Refused"}
"""Exceptions that are no failure: Ctrl-C during training (saved; the CLI exits 130), and the model
check's rule signal (``edge.modelcheck`` turns it into a ModelCheckError before it leaves)."""


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
    assert {"edge.preprocess.ImageError", "train.config.TrainError", "report.pipeline.PipelineError"} <= set(found)
    assert [name for name, cls in found.items()
            if name not in NOT_FAILURES and not issubclass(cls, PolyheadError)] == []


# (module of the CLI, its arguments, the library function it calls: patched to fail)
CLIS = [
    ("edge.cli", ["info", "{tmp}"], "edge.describe.describe"),
    ("datasets.__main__", ["check", "{tmp}"], "datasets.folder.check"),
    ("train.__main__", ["--data", "{tmp}", "--out", "{tmp}"], "train.__main__.resolve_config"),
    ("convert.cli", ["{tmp}"], "convert.run.convert_run"),
    ("report.__main__", ["{tmp}"], "report.build.write_report"),
    ("report.predictions", ["{tmp}", "--data", "{tmp}"], "report.predictions.write_predictions"),
    ("report.pipeline", [], "report.pipeline.run_pipeline"),
    ("report.paper", [], "report.paper.run_paper"),
    ("report.compare", [], "report.compare.run_compare"),
    ("report.bench_suite", [], "report.bench_suite.run_suite"),
]


def _fail(*args, **kwargs):
    raise PolyheadError("first line\nsecond line")


@pytest.mark.parametrize("cli, args, target", CLIS, ids=[c[0] for c in CLIS])
def test_a_cli_failure_prints_exactly_one_line(cli, args, target, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")  # convert's CLI sets it when absent
    module, _, name = target.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module), name, _fail)
    main = importlib.import_module(cli).main
    result = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 1, result.output
    assert result.output == "Error: first line second line\n"


def test_train_bench_failure_prints_exactly_one_line(monkeypatch, capsys):
    import train.bench

    monkeypatch.setattr(train.bench, "feature_cache_speedup", _fail)
    monkeypatch.setattr(sys, "argv", ["train.bench"])
    with pytest.raises(SystemExit) as e:
        train.bench.main()
    assert e.value.code == 1
    assert capsys.readouterr().err == "Error: first line second line\n"


def test_configured_logging_prints_the_bare_message_to_stderr_once(capsys):
    configure_logging()
    configure_logging()
    logging.getLogger("train.fit").info("[multihead] trains on 3 of 4 train rows")
    logging.getLogger("datasets.pipeline").debug("not shown")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "[multihead] trains on 3 of 4 train rows\n"
