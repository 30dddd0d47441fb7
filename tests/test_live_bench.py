"""The live benchmark's machinery (report.benchmarks.live): the paced writer, the window figures and the
printed table on made-up records; and, end to end, one short rate and the video labels against
``polyhead-edge live`` (skipped until edge/live/command.py is in the tree). No timed assertions:
the figures are benchmarks."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_fixtures import edge_fx_fixture  # noqa: E402, F401

from report.benchmarks.live import (  # noqa: E402
    PacedWriter,
    _end_accounting,
    camera_frames,
    live_table,
    measure_rate,
    measure_video,
    window_figures,
)


class FakeLive:
    """The parts of LiveProcess that window_figures and _end_accounting read."""

    def __init__(self, lines):
        self.lines = lines

    def results(self):
        return [(t, r) for t, r in self.lines if "event" not in r]

    def events(self, kind=None):
        return [(t, r) for t, r in self.lines if "event" in r and (kind is None or r["event"] == kind)]


def test_paced_writer_sends_whole_frames_in_order():
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain():
        with os.fdopen(read_fd, "rb") as r:
            while chunk := r.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    frames = [b"\xff\xd8" + bytes([i]) * 1000 + b"\xff\xd9" for i in range(3)]
    writer = PacedWriter(os.fdopen(write_fd, "wb"), frames, fps=1000, duration_s=0.02)
    writer.run()  # in this thread: it returns when the duration is over and closes the stream
    reader.join(timeout=10)
    n = len(writer.sent)
    assert n >= 1 and writer.sent == sorted(writer.sent)
    assert bytes(received) == b"".join(frames[(i + 1) % 3] for i in range(n))


def test_window_figures_on_made_up_results():
    # 30 fps source, every frame a result 20 ms after it was sent, decode 3 ms + invoke 7 ms.
    sent = [i / 30 for i in range(300)]
    lines = [(sent[i] + 0.020, {"seq": i, "decode_ms": 3.0, "invoke_ms": 7.0, "age_ms": 15.0, "dropped": 0})
             for i in range(300)]
    f = window_figures(FakeLive(lines), sent, 30, start=2.0, end=9.0)
    assert f["compute_limit_fps"] == 100.0 and f["expected_fps"] == 30
    assert f["sustained_fps"] == pytest.approx(30, abs=0.2) and f["fps_ok"]
    assert f["age_ms_p95"] == pytest.approx(20.0, abs=0.01) and f["age_target_ms"] == pytest.approx(53.3, abs=0.1)
    assert f["age_ok"] and f["age_trend_ok"] and abs(f["age_slope_ms_per_min"]) < 1e-6
    assert f["seq_strictly_increasing"]
    # The age grows by 1 ms per result, i.e. a queue: the trend says so.
    growing = [(sent[i] + 0.020 + i / 1000, {**r}) for i, (_, r) in enumerate(lines)]
    g = window_figures(FakeLive(growing), sent, 30, start=2.0, end=9.0)
    assert not g["age_trend_ok"] and g["age_slope_ms_per_min"] > 1000
    # Half the frames come out: the rate is missed.
    h = window_figures(FakeLive(lines[::2]), sent, 30, start=2.0, end=9.0)
    assert not h["fps_ok"] and h["fps_ratio"] == pytest.approx(0.5, abs=0.02)


def test_end_accounting():
    end = {"event": "end", "frames": 10, "results": 6, "dropped": 3, "corrupt": 1}
    assert _end_accounting(FakeLive([(1.0, end)]), 10)["every_frame_accounted"]
    assert not _end_accounting(FakeLive([(1.0, end)]), 11)["every_frame_accounted"]  # one frame never read
    assert _end_accounting(FakeLive([]), 10) == {"end_record": False}


def test_live_table_prints_every_figure_and_failures():
    sent = [i / 10 for i in range(100)]
    lines = [(sent[i] + 0.01, {"seq": i, "decode_ms": 1.0, "invoke_ms": 1.0, "age_ms": 5.0, "dropped": 0})
             for i in range(100)]
    rate = window_figures(FakeLive(lines), sent, 10, 1.0, 9.0)
    live = {"variant": "multihead.int8", "frame_size": [640, 480], "frame_kb": 40.0, "seconds": 8, "warmup_s": 1,
            "load_average_start": 1.0, "load_average_end": 1.1, "cpu_count": 2, "rates": {"10": rate},
            "slow_model": {**rate, "source_fps": 300, "dropped": 5, "every_frame_accounted": True,
                           "age_bounded": True, "age_bound_ms": 20},
            "memory": {"soak_s": 60, "source_fps": 30, "rss_mb_first": 50, "rss_mb_last": 50.1,
                       "rss_slope_mb_per_10min": 0.5, "rss_ok": True, "threads_min": 3, "threads_max": 3,
                       "open_files_min": 5, "open_files_max": 5, "threads_and_files_flat": True},
            "reconnect": {"resume_s": [0.4, 0.5], "resume_ok": True, "lost_events": 2, "restored_events": 2},
            "video_accuracy": {"same_labels": 3, "frames": 3, "max_abs_score_delta": 0.0, "all_same": True,
                               "how": "stdin"},
            "errors": {"x": "RuntimeError: boom"}}
    text = live_table(live)
    for needle in ("10 fps source", "slow model (300 fps", "memory (60 s", "reconnect:", "video accuracy: 3/3",
                   "x: FAILED: RuntimeError: boom"):
        assert needle in text, needle
    assert "MISSED" not in text


def test_camera_frames_are_camera_sized(tmp_path):
    for i in range(2):
        Image.new("RGB", (48, 40), (i * 100, 0, 0)).save(tmp_path / f"{i}.jpg")
    frames = camera_frames(sorted(tmp_path.glob("*.jpg")))
    assert len(frames) == 2 and Image.open(io.BytesIO(frames[0])).size == (640, 480)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("edge.live.command") is None,
                    reason="polyhead-edge live (edge/live/command.py) is not in this tree")
def test_live_bench_against_the_command(edge_fx, tmp_path):
    """A short rate and the video labels, against the real command (figures not asserted: they are
    the benchmark's; only that each was measured and the labels agree)."""
    images = sorted((edge_fx / "images").glob("*.jpg"))
    frames = camera_frames(images, count=2)
    rate = measure_rate(edge_fx / "models", "multihead.float32", frames, fps=30, warmup_s=0.5, seconds=2)
    # Not the window's result count: a busy machine may stall the command for the whole 2 s.
    assert rate["seq_strictly_increasing"] and rate["exit_status"] == 0
    assert rate["end_record"] and rate["frames_read"] > 0 and rate["every_frame_accounted"], rate
    video = measure_video(edge_fx / "models", "multihead.float32", images, tmp_path)
    assert video["all_same"] and video["max_abs_score_delta"] == 0.0, video
