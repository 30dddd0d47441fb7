"""Experiments: whole studies built from the stages, each with its own runs and write-up.

- ``paper``: the paper's three backbones plus EfficientNet-Lite0 (``make paper``), its published
  figures in ``paper_data``;
- ``compare``: scratch vs frozen vs fine-tuned on one dataset (``make compare``).
"""
