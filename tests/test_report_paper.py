"""make paper's protocol choice and weights lookup (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from report.paper import PAPER_BACKBONES, freeze_for, weights_for
from report.pipeline import PipelineError


def test_paper_backbones_are_registered() -> None:
    from train.backbones import list_backbones

    assert set(PAPER_BACKBONES) <= set(list_backbones())


def test_protocol_frozen_only_with_weights_unless_asked() -> None:
    assert freeze_for("auto", "imagenet") and not freeze_for("auto", "none")
    assert freeze_for("frozen", "none") and not freeze_for("scratch", "imagenet")
    with pytest.raises(PipelineError, match="protocol=bogus"):
        freeze_for("bogus", "none")


def test_weights_folder_resolves_each_backbones_file(tmp_path: Path) -> None:
    from train.backbones import backbone_spec

    assert weights_for("alexnet", "none", 224) == "none"
    assert weights_for("alexnet", "imagenet", 224) == "imagenet"
    name = backbone_spec("squeezenet").imagenet_file((224, 224), {})
    (tmp_path / name).write_bytes(b"h5")
    assert weights_for("squeezenet", str(tmp_path), 224) == str(tmp_path / name)
    with pytest.raises(PipelineError, match="no weights file for alexnet"):
        weights_for("alexnet", str(tmp_path), 224)


def test_weights_for_an_unknown_backbone_is_a_pipeline_error(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="unknown backbone 'foo'"):
        weights_for("foo", str(tmp_path), 224)
