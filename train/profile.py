"""Per-approach parameters, MACC and Keras file size (``python -m train profile``)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.contract.schema import LabelSchema


def profile(
    backbone: str,
    schema: LabelSchema,
    image_size: Sequence[int] | None = None,
    approaches: Sequence[str] = ("multihead", "joint", "separate"),
    freeze_base: bool = True,
    backbone_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One record per approach: params {total, trainable}, macc {total, trained}, keras_bytes.

    Sums over the files of an approach (separate: one model per head). ``trained`` MACC counts
    the layers that train: with ``freeze_base`` (the paper's setting) only the heads.
    """
    from train.backbones import backbone_spec
    from train.macc import approach_costs
    from train.models import build_model

    if image_size is None:
        s = backbone_spec(backbone).default_size
        image_size = (s, s)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for approach in approaches:
            models = build_model(approach, backbone, schema, image_size, freeze_base=freeze_base,
                                 backbone_kwargs=backbone_kwargs)
            keras_bytes = 0
            for name, m in models.items():
                path = Path(tmp) / f"{name}.keras"
                m.save(str(path))
                keras_bytes += path.stat().st_size
            rows.append({
                "backbone": backbone, "approach": approach, "image_size": list(image_size),
                "files": len(models), **approach_costs(models.values()), "keras_bytes": keras_bytes,
            })
    return rows


def format_profile(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width table of ``profile`` records."""
    cols = ["approach", "files", "params", "trainable", "MACC (M)", "trained MACC (M)", "keras KB"]
    body = [
        [r["approach"], str(r["files"]), f"{r['params']['total']:,}", f"{r['params']['trainable']:,}",
         f"{r['macc']['total'] / 1e6:.1f}", f"{r['macc']['trained'] / 1e6:.3f}", f"{r['keras_bytes'] / 1024:.0f}"]
        for r in rows
    ]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(cols)]
    fmt = lambda r: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=False)))  # noqa: E731
    head = f"{rows[0]['backbone']} @ {rows[0]['image_size'][0]}x{rows[0]['image_size'][1]}" if rows else ""
    return "\n".join([head, fmt(cols), fmt(["-" * w for w in widths]), *map(fmt, body)])
