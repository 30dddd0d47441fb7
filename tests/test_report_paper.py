"""make paper's protocol choice and weights lookup (no training here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from report.experiments.paper import PAPER_BACKBONES, freeze_for, weights_for
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


def test_summary_shows_accuracy_only_for_pretrained_weights(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from report_fixtures import write_run

    from report.experiments.paper import accuracy_source, summary_markdown

    runs = [write_run(tmp_path / "squeezenet"), write_run(tmp_path / "efficientnet_lite0")]
    sources = {"squeezenet": {"accuracy_source": accuracy_source("none", True)},
               "efficientnet_lite0": {"accuracy_source": accuracy_source("imagenet", True)}}
    rows = [r for r in summary_markdown(runs, sources).splitlines() if r.startswith("| mobilenet_v2")]
    random_row, transfer_row = rows
    # fixtures: multihead float32 9_051_234 bytes, 2_261_000 params, 56.12 M MACC, p50 10.0 / 19.5 ms;
    # multihead joint accuracy 0.9123 - 0.1 (test), 0.9123 - 0.1 - 0.3 (unseen); separate unseen 0.9031 - 0.4.
    assert "none: random frozen base (structure and timing only)" in random_row
    assert "9.051 MB" in random_row and "2,261,000" in random_row and "56.1 M" in random_row
    assert "10.00 ms" in random_row and "19.50 ms" in random_row
    assert random_row.count("— (random weights)") == 3 and "81.23 %" not in random_row
    assert "ImageNet transfer learning, frozen base" in transfer_row
    assert "81.23 %" in transfer_row and "51.23 %" in transfer_row and "50.31 %" in transfer_row
