"""Runs in ``.venv-mediapipe`` (MediaPipe Tasks), driven by tests/test_metadata_mediapipe.py.

``python metadata_mediapipe_worker.py MAX_RESULTS MODEL... -- IMAGE...`` prints one JSON object:
for every model and image, MediaPipe ``ImageClassifier``'s classification lists (head index, head
name, categories with index, name and score). Each image is decoded and resized by polyhead's own
``edge.runtime.preprocess.load_image`` to the model's input size first, so both sides see the same pixels.
"""

from __future__ import annotations

import json
import sys


def classify(models: list[str], images: list[str], max_results: int) -> dict:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from edge.contract.card_archive import read_card
    from edge.runtime.preprocess import load_image

    out: dict = {"mediapipe": mp.__version__, "models": {}}
    for model in models:
        card = read_card(model)
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model),
                                                max_results=max_results)
        per_image = {}
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for image in images:
                pixels = load_image(image, card.input.height, card.input.width)
                result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
                per_image[image] = [
                    {"head_index": c.head_index, "head_name": c.head_name,
                     "categories": [[k.index, k.category_name, float(k.score)] for k in c.categories]}
                    for c in result.classifications
                ]
        out["models"][model] = per_image
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    split = args.index("--")
    print(json.dumps(classify(args[1:split], args[split + 1:], int(args[0]))))
