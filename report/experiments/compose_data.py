"""``python -m report.experiments.compose_data SRC DST``: the synthetic set relabelled into three heads.

A second dataset for ``make compose`` with other attributes and another number of heads, no new
images: each row's make becomes its body colour family (12 classes) and its badge (8), both read
from ``datasets.synth.catalogue()``; the type stays. A "pair" is then a colour/badge/type triple;
the held-out make/type pairs of SRC are triples never in train. DST's labels.csv points at SRC's
images (``dataset.json`` ``image_root``), so a run on SRC already holds their features.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from edge.contract.catalogue import CATALOGUE_FILE, write_catalogue
from edge.io import atomic_write_text


def relabel_three_heads(src: Path, dst: Path) -> Path:
    """Write DST/labels.csv (image, split, colour, badge, type), DST/dataset.json and DST/catalogue.csv; returns DST."""
    from datasets.synth import BODY_COLOURS, catalogue

    styles = {s.name: s for s in catalogue()}
    colour = {c: f"colour{i:02d}" for i, c in enumerate(BODY_COLOURS)}
    dst.mkdir(parents=True, exist_ok=True)
    with open(src / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["image,split,colour,badge,type"]
    for r in rows:
        s = styles[r["make"]]
        lines.append(",".join([r["image"], r["split"], colour[s.body], s.badge, r["type"]]))
    # The catalogue: every make's colour and badge with each type it builds.
    write_catalogue(dst / CATALOGUE_FILE, ("colour", "badge", "type"),
                    [(colour[s.body], s.badge, t) for s in styles.values() for t in s.types])
    atomic_write_text(dst / "dataset.json", json.dumps({"image_root": str(src.resolve())}))
    atomic_write_text(dst / "labels.csv", "\n".join(lines) + "\n")
    return dst


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(relabel_three_heads(Path(sys.argv[1]), Path(sys.argv[2])))
