"""Shared test fixtures. Tests make their own tiny data; nothing is downloaded."""

from __future__ import annotations

import os

# Keep TensorFlow quiet and on the CPU in tests; the suite must pass on 2 cores.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
