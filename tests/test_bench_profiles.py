"""The profiling commands docs/benchmarks.md quotes: they run and report what they claim. No timing
assertions (the machine is shared); only shapes, sizes and that each step is measured."""

from __future__ import annotations

from edge_fixtures import edge_fx_fixture  # noqa: F401

from edge.runtime.preprocess import load_image
from report.benchmarks.decode_profile import Source, photo_jpeg, profile
from report.benchmarks.memory_profile import steps


def test_decode_profile_uses_the_draft_size_load_image_decodes_at():
    rows = profile(repeats=1, sources=(Source(400, 300),), targets=(96,))
    (row,) = rows
    assert row["source"] == "400x300 noisy" and row["recipe"] == "q90 noise 12" and row["target"] == 96
    assert row["draft_size"] == "200x150"  # the smallest DCT scale still >= 96 x 96
    for key in ("load_image_ms", "decode_full_ms", "decode_draft_ms", "resize_and_array_ms"):
        assert row[key] > 0
    assert load_image(photo_jpeg(400, 300), 96, 96).shape == (96, 96, 3)


def test_decode_profile_prints_kb_per_source_and_the_recipe_sets_the_size():
    noisy, phone = (Source(640, 360), Source(640, 360, quality=85, noise=3.0, label="phone"))
    rows = profile(repeats=1, sources=(noisy, phone), targets=(96,))
    assert [r["source"] for r in rows] == ["640x360 noisy", "640x360 phone"]
    assert rows[1]["recipe"] == "q85 noise 3"
    assert 0 < rows[1]["jpeg_kb"] < rows[0]["jpeg_kb"]  # less noise, lower quality: fewer bytes


def test_memory_profile_steps_grow_and_peak_is_the_largest(edge_fx):
    rss = steps(str(edge_fx / "models" / "multihead.int8.tflite"), str(edge_fx / "images"), "1")
    assert list(rss) == ["python", "numpy", "pillow", "litert module", "model loaded + tensors allocated",
                         "first inference", "50 images, prefetch thread", "peak (ru_maxrss)"]
    assert rss["numpy"] > rss["python"] > 0
    assert rss["peak (ru_maxrss)"] >= max(v for k, v in rss.items() if k != "peak (ru_maxrss)") - 0.5
