"""The paper's published figures, as data, so the report can put our ratios beside theirs.

Source: A. Odetola, O. Oderhohwo, S. R. Hasan, "A Scalable Multilabel Classification to Deploy
Deep Learning Architectures For Edge Devices", arXiv:1911.02098, Tables I-III. Latency is the
time for 100 test images on a Raspberry Pi 3 (seconds); size is the model size in MB. Stanford
Cars, make (48) x type (8), transfer learning with the base frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_CITATION = (
    "Odetola, Oderhohwo, Hasan, arXiv:1911.02098, Tables I-III "
    "(latency of 100 test images on a Raspberry Pi 3; model size in MB)"
)


@dataclass(frozen=True)
class PaperFigures:
    """One backbone's published latency (s per 100 images) and size (MB), per approach."""

    backbone: str
    latency_s: dict[str, float]
    size_mb: dict[str, float]

    def ratio(self, quantity: str, numerator: str, denominator: str) -> float:
        """E.g. ``ratio("latency_s", "multihead", "separate")``."""
        values = getattr(self, quantity)
        return values[numerator] / values[denominator]


PAPER_TABLES: tuple[PaperFigures, ...] = (
    PaperFigures(
        "AlexNet",
        latency_s={"multihead": 17.215, "separate": 35.498, "joint": 17.693},
        size_mb={"multihead": 223.0, "separate": 445.2, "joint": 445.2},
    ),
    PaperFigures(
        "GoogLeNet",
        latency_s={"multihead": 3.178, "separate": 7.265, "joint": 3.277},
        size_mb={"multihead": 40.9, "separate": 95.6, "joint": 48.6},
    ),
    PaperFigures(
        "SqueezeNet",
        latency_s={"multihead": 6.466, "separate": 12.848, "joint": 6.512},
        size_mb={"multihead": 2.9, "separate": 5.7, "joint": 3.0},
    ),
)
"""Tables I (AlexNet), II (GoogLeNet) and III (SqueezeNet) of arXiv:1911.02098."""
