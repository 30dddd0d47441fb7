"""``polyhead-edge live``: the JPEG splitter, smoothing and change events as units; then real processes
on real pipes and sockets on 127.0.0.1: a stdin writer, an HTTP MJPEG camera that goes away and
comes back, ffmpeg on an MJPEG video (labels equal ``predict``'s), a killed ffmpeg, SIGTERM, bad
bytes, a slow model, the fake ``rpicam-vid``, and the Python API."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import edge_fx_fixture  # noqa: F401
from live_fixtures import (
    MjpegServer,
    alive,
    children,
    fake_rpicam_vid,
    jpeg_frames,
    mjpeg_video,
    need_ffmpeg,
    write_frames,
    write_paced,
)

from edge.live.frames import JpegSplitter
from edge.live.reader import Frame, LatestSlot
from edge.live.smooth import ChangeTracker, Smoother

REPO = Path(__file__).resolve().parents[1]
MODEL = "multihead.int8.tflite"


# -- units ----------------------------------------------------------------------------------------


def _exif_jpeg() -> bytes:
    """A JPEG whose APP1 holds a JPEG thumbnail (its own SOI..EOI): a naive EOI search cuts it short."""
    thumb = jpeg_frames(1, (16, 12), seed=5)[0]
    body = jpeg_frames(1, (40, 30), seed=6)[0]
    app1 = b"Exif\x00\x00" + thumb
    return body[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + body[2:]


def test_splitter_cuts_frames_whatever_the_chunking():
    frames = jpeg_frames(4) + [_exif_jpeg()]
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(frames[0])).save(buf, "JPEG", progressive=True)
    frames.append(buf.getvalue())
    stream = b"noise" + b"".join(b"--b\r\nContent-Type: image/jpeg\r\n\r\n" + f + b"\r\n" for f in frames)
    for chunk in (1, 3, 1000, len(stream)):
        s = JpegSplitter()
        out = [f for i in range(0, len(stream), chunk) for f in s.feed(stream[i:i + chunk])]
        assert out == frames, chunk
        assert s.stats.corrupt == 0


def test_splitter_memory_is_bounded_and_bad_frames_counted():
    s = JpegSplitter(max_frame_bytes=50_000, max_pixels=100 * 100)
    garbage = bytes(range(256)).replace(b"\xff", b"") * 400  # 100 KB with no marker at all
    for _ in range(200):  # 20 MB of garbage
        assert s.feed(garbage) == []
        assert len(s._buf) <= 1
    good = jpeg_frames(1, (64, 48))[0]
    # A frame whose scan data never ends: abandoned at the byte cap, whatever keeps coming.
    s.feed(good[:good.index(b"\xff\xda") + 20])
    for _ in range(100):
        s.feed(b"\x00" * 10_000)
        assert len(s._buf) <= 50_000 + 10_000
    assert s.stats.corrupt == 1 and "over 50000 bytes" in s.stats.last_error
    # Over the pixel cap: refused from its header, before its data arrives.
    big = jpeg_frames(1, (200, 120))[0]
    assert s.feed(big) == [] and "200x120" in s.stats.last_error and s.stats.corrupt == 2
    # A broken structure, then a good frame: the good one comes through.
    assert s.feed(b"\xff\xd8\x00\x00junk" + good) == [good]
    assert s.stats.corrupt == 3 and "\n" not in s.stats.last_error


def test_smoothing_is_time_based_so_drops_do_not_change_it():
    rng = np.random.default_rng(0)
    tau = 0.5
    steps = [(i * 0.01, rng.dirichlet(np.ones(3))) for i in range(200)]  # 100 fps, 2 s
    kept = steps[::7]  # the same stream with 6 of 7 frames dropped
    every, dropped = Smoother(tau), Smoother(tau)
    for t, p in steps:
        every.update({"h": p}, t)
    for t, p in kept:
        out = dropped.update({"h": p}, t)
    # The closed form over the frames that ran: each moves the average by 1 - exp(-dt / tau).
    want = kept[0][1].astype(np.float64)
    for (t0, _), (t1, p) in zip(kept, kept[1:], strict=False):
        want = want + (1 - np.exp(-(t1 - t0) / tau)) * (p - want)
    np.testing.assert_allclose(out["h"], want, rtol=1e-12)
    # A constant input: the average after dt is the same for 1 step or 50 (no per-frame weighting).
    a, b = Smoother(tau), Smoother(tau)
    start, target = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    a.update({"h": start}, 0.0)
    b.update({"h": start}, 0.0)
    a.update({"h": target}, 1.0)
    for i in range(1, 51):
        b.update({"h": target}, i / 50)
    np.testing.assert_allclose(a._state["h"], b._state["h"], rtol=1e-9)
    np.testing.assert_allclose(a._state["h"][1], 1 - np.exp(-1 / tau), rtol=1e-12)
    a.reset()
    assert a.update({"h": start}, 5.0)["h"].tolist() == start.tolist()
    assert Smoother(0).update({"h": target}, 0.0)["h"].tolist() == target.tolist()


def test_change_events_have_hysteresis():
    t = ChangeTracker({"make": ("a", "b", "c")}, min_score=0.4, margin=0.1)
    seq = [[0.35, 0.33, 0.32],  # nothing passes min_score
           [0.45, 0.3, 0.25],  # a arrives
           [0.42, 0.4, 0.18],
           [0.38, 0.45, 0.17],  # b is on top, but not by the margin: a stays
           [0.3, 0.55, 0.15],  # now it is: b
           [0.2, 0.65, 0.15],
           [0.34, 0.33, 0.33],  # b under min_score but above min_score - margin: stays
           [0.36, 0.29, 0.35]]  # b below that: cleared (a is top but under min_score)
    events = [[(c.label, c.previous) for c in t.update({"make": np.array(p)})] for p in seq]
    assert events == [[], [("a", None)], [], [], [("b", "a")], [], [], [(None, "b")]]


def test_a_nothing_label_is_never_announced_and_clears():
    t = ChangeTracker({"make": ("a", "b", "none")}, min_score=0.6, margin=0.1, nothing="none")
    seq = [[0.1, 0.1, 0.8], [0.7, 0.1, 0.2], [0.55, 0.1, 0.35], [0.3, 0.05, 0.65], [0.2, 0.1, 0.7]]
    events = [[(c.label, c.previous) for c in t.update({"make": np.array(p)})] for p in seq]
    assert events == [[], [("a", None)], [], [(None, "a")], []]


def test_a_camera_password_never_reaches_records_or_logs():
    from edge.live.sources import HttpMjpegSource

    assert HttpMjpegSource("http://admin:s3cret@192.168.1.20:8080/video?x=1").name == \
        "http://192.168.1.20:8080/video?x=1"
    assert HttpMjpegSource("http://192.168.1.20/video").name == "http://192.168.1.20/video"


def test_latest_slot_keeps_the_newest_and_counts_drops():
    stop = threading.Event()
    slot = LatestSlot()
    for i in range(5):
        slot.put_frame(Frame(i, b"", 0.0, 0.0), stop)
    assert slot.get(0).seq == 4 and slot.dropped == 4 and slot.get(0) is None
    lossless = LatestSlot(lossless=True)
    got = []
    writer = threading.Thread(target=lambda: [lossless.put_frame(Frame(i, b"", 0.0, 0.0), stop) for i in range(20)])
    writer.start()
    while len(got) < 20:
        item = lossless.get(1)
        if item is not None:
            got.append(item.seq)
    writer.join()
    assert got == list(range(20)) and lossless.dropped == 0


# -- real processes -------------------------------------------------------------------------------


class Live:
    """``polyhead-edge live ... --format jsonl`` in a subprocess; records parsed as they come."""

    def __init__(self, *args, stdin=None, env_extra=None, shell: str | None = None):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               **(env_extra or {})}
        cmd = shell if shell else [sys.executable, "-m", "edge", "live", *map(str, args), "--format", "jsonl"]
        self.proc = subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                                     shell=bool(shell))
        self.records: list[dict] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.stderr = ""
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(json.loads(line))
        self._q.put(None)

    def _read_err(self) -> None:
        self.stderr = self.proc.stderr.read()

    def wait_for(self, pred, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out; last records {self.records[-3:]}") from None
            if r is None:
                raise AssertionError(f"live ended early: {self.records[-3:]} {self.stderr[-2000:]}")
            self.records.append(r)
            if pred(r):
                return r

    def finish(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        while (r := self._q.get(timeout=10)) is not None:
            self.records.append(r)
        self._err.join(10)
        return rc

    @property
    def results(self) -> list[dict]:
        return [r for r in self.records if "event" not in r]

    def events(self, kind: str) -> list[dict]:
        return [r for r in self.records if r.get("event") == kind]


def _check_records(live: Live) -> dict:
    """The invariants of every run: seq strictly increases, counters never go back, one end."""
    seqs = [r["seq"] for r in live.results]
    assert seqs == sorted(set(seqs)), seqs
    assert [r["dropped"] for r in live.results] == sorted(r["dropped"] for r in live.results)
    for r in live.results:
        assert set(r) >= {"seq", "time", "source_time", "age_ms", "decode_ms", "invoke_ms", "fps", "dropped", "heads"}
        assert r["age_ms"] >= 0 and set(r["heads"]) == {"make", "type"}
        assert set(r["heads"]["make"]) == {"raw", "smoothed"}
    (end,) = live.events("end")
    assert live.records[-1] is end
    assert end["results"] == len(live.results)
    return end


@pytest.fixture(scope="module")
def model(edge_fx, tmp_path_factory) -> Path:
    return edge_fx / "models" / MODEL


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("frames")
    write_frames(d, jpeg_frames(12))
    return d


def test_stdin_stream_with_garbage_corrupt_frames_and_a_stall(model, tmp_path):
    frames = jpeg_frames(6)
    live = Live(model, "-", "--stall", "0.5", "--max-frame-pixels", "10000", stdin=subprocess.PIPE)
    pipe = live.proc.stdin.buffer if hasattr(live.proc.stdin, "buffer") else live.proc.stdin
    raw = os.fdopen(os.dup(pipe.fileno()), "wb")
    live.proc.stdin.close()
    raw.write(b"garbage, no marker at all " * 4000)  # 100 KB before the first frame
    write_paced(raw, frames, fps=50, count=6)
    live.wait_for(lambda r: r.get("seq") == 5 or r.get("event") == "lost")
    # Whole by its markers, so it is cut as a frame, but with no image in it: fails to decode. (Damage
    # inside the scan data is concealed by libjpeg, as by any JPEG viewer: that frame runs.)
    corrupt = b"\xff\xd8\xff\xe0\x00\x06JFIF\xff\xd9"
    raw.write(corrupt)
    raw.write(jpeg_frames(1, (200, 120))[0])  # 24 000 pixels: over the cap, refused from its header
    raw.flush()
    live.wait_for(lambda r: r.get("event") == "lost", timeout=30)  # no bytes for 0.5 s
    write_paced(raw, frames, fps=50, count=6)
    raw.close()
    assert live.finish() == 0, live.stderr
    end = _check_records(live)
    assert end["reason"] == "end of stream" and end["frames"] == 13 and end["corrupt"] == 2
    assert end["results"] + end["dropped"] + 1 == 13  # the oversized frame never got a number
    assert [e["event"] for e in live.records if e.get("event") in ("lost", "restored", "end")] == \
        ["lost", "restored", "end"]
    warnings = [ln for ln in live.stderr.splitlines() if "skipped" in ln]
    assert len(warnings) == 2 and any("200x120" in w for w in warnings), live.stderr


def test_http_camera_goes_away_and_comes_back(model):
    server = MjpegServer(jpeg_frames(8), fps=25).start()
    live = Live(model, server.url, "--stall", "1", "--retry-max", "0.3")
    try:
        live.wait_for(lambda r: "seq" in r and r["seq"] >= 5)
        server.stop()
        lost = live.wait_for(lambda r: r.get("event") == "lost")
        time.sleep(1.0)  # refused connections meanwhile: retried with backoff
        server.start()
        back = time.monotonic()
        live.wait_for(lambda r: r.get("event") == "restored")
        first = live.wait_for(lambda r: "seq" in r)
        resumed_s = time.monotonic() - back
        live.wait_for(lambda r: "seq" in r and r["seq"] >= first["seq"] + 5)
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish() == 0, live.stderr
    finally:
        server.stop()
        if live.proc.poll() is None:
            live.proc.kill()
    end = _check_records(live)
    assert end["reason"] == "SIGTERM" and lost["time"] < first["time"]
    # Not a speed test (that is a benchmark: docs/edge.md has the figure, at most about 1 s with the
    # default --retry-max): a bound that only a reader that gave up, or waited on a fixed watchdog, would miss.
    assert resumed_s < 10, resumed_s


def _predict_records(folder: Path, model: Path) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "edge", "predict", str(model), str(folder), "--format", "jsonl",
                           "--top-k", "3"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {Path(r["image"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


def test_video_file_frame_by_frame_equals_predict(model, frames_dir, tmp_path):
    need_ffmpeg()
    video = mjpeg_video(frames_dir, tmp_path / "cars.avi")
    live = Live(model, video, "--top-k", "3")
    assert live.finish() == 0, live.stderr
    end = _check_records(live)
    assert end["dropped"] == 0 and end["frames"] == 12 and [r["seq"] for r in live.results] == list(range(12))
    want = _predict_records(frames_dir, model)
    for r in live.results:
        expected = want[f"f{r['seq']:03d}.jpg"]["heads"]
        for head, v in r["heads"].items():
            assert v["raw"] == expected[head]["top_k"], (r["seq"], head)


def test_killed_ffmpeg_is_restarted_and_no_frame_runs_twice(model, tmp_path):
    need_ffmpeg()
    n = 40  # 40 noisy 320x240 JPEGs (about 3 MB, the pipe holds 64 KB): ffmpeg is still writing when killed
    folder = tmp_path / "frames"
    write_frames(folder, jpeg_frames(n, (320, 240), seed=3, quality=95))
    video = mjpeg_video(folder, tmp_path / "long.avi")
    live = Live(model, video)
    live.wait_for(lambda r: r.get("seq") == 2)
    (ffmpeg,) = [c for c in children(live.proc.pid) if "ffmpeg" in Path(f"/proc/{c}/cmdline").read_text()]
    os.kill(ffmpeg, signal.SIGKILL)
    assert live.finish(timeout=120) == 0, live.stderr
    end = _check_records(live)
    assert [r["seq"] for r in live.results] == list(range(n)), "every frame once, in order"
    assert end["dropped"] == 0 and live.events("lost") and live.events("restored")
    assert "killed by signal 9" in live.events("lost")[0]["reason"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_reaps_ffmpeg(model, frames_dir, tmp_path, sig):
    need_ffmpeg()
    video = mjpeg_video(frames_dir, tmp_path / "loop.avi", fps=5)
    live = Live(model, video, "--realtime")
    live.wait_for(lambda r: "seq" in r)
    kids = children(live.proc.pid)
    assert kids and all(alive(k) for k in kids)
    live.proc.send_signal(sig)
    assert live.finish() == 0, live.stderr
    assert _check_records(live)["reason"] == sig.name
    assert not any(alive(k) for k in kids), "ffmpeg outlived polyhead-edge"
    assert "Traceback" not in live.stderr


def test_slow_model_drops_frames_and_seq_strictly_increases(edge_fx):
    """A model slower than the source: the newest frame is taken, the rest counted as drops, ages
    bounded (the reader never queues)."""
    from edge.live.session import LiveOptions, LiveRun
    from edge.live.sources import PipeSource
    from edge.runtime.predict import Predictor
    from edge.runtime.variants import discover

    class Slow(Predictor):
        def predict_image(self, pixels):
            time.sleep(0.03)
            return super().predict_image(pixels)

    (variant,) = discover(edge_fx / "models" / MODEL).values()
    r, w = os.pipe()
    out = os.fdopen(w, "wb")
    writer = threading.Thread(target=lambda: (write_paced(out, jpeg_frames(4), fps=300, count=150), out.close()))
    run = LiveRun(Slow(variant), PipeSource(r, "pipe"), LiveOptions(stall_s=0))
    writer.start()
    records = list(run)
    writer.join()
    os.close(r)
    results = [x for x in records if "event" not in x]
    seqs = [x["seq"] for x in results]
    assert seqs == sorted(set(seqs)) and records[-1]["event"] == "end"
    assert records[-1]["dropped"] > 50 and len(results) + records[-1]["dropped"] == 150
    assert max(x["age_ms"] for x in results) < 1000


def test_fake_rpicam_vid_pipe_as_the_docs_show(model, frames_dir, tmp_path):
    fake_rpicam_vid(tmp_path / "bin", str(frames_dir), period=0.02)
    cmd = f"rpicam-vid --codec mjpeg --flush -t 0 -o - | {sys.executable} -m edge live {model} - --format jsonl"
    live = Live(shell=cmd, env_extra={"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert live.finish() == 0, live.stderr
    end = _check_records(live)
    assert end["frames"] == 12 and end["results"] >= 1 and end["results"] + end["dropped"] == 12


def test_bad_sources_are_one_line(model, tmp_path):
    for source, words in (("no-such.mp4", "no such file"), (str(tmp_path), "is a folder")):
        proc = subprocess.run([sys.executable, "-m", "edge", "live", str(model), source], capture_output=True,
                              text=True, cwd=REPO, timeout=60)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error")]
        assert proc.returncode == 1 and len(lines) == 1 and words in lines[0], proc.stderr
    if shutil.which("ffmpeg"):
        (tmp_path / "not-a-video.mp4").write_bytes(b"nothing here" * 100)
        live = Live(model, tmp_path / "not-a-video.mp4")
        assert live.finish() == 1
        (end,) = live.events("end")
        assert "not-a-video.mp4" in end["error"] and "Traceback" not in live.stderr


def test_several_variants_pick_multihead_int8_and_say_so(edge_fx, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edge", "predict", str(edge_fx / "models"),
                           str(edge_fx / "images"), "--format", "jsonl"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0 and "using multihead.int8" in proc.stderr
    assert {json.loads(ln)["variant"] for ln in proc.stdout.splitlines()} == {"multihead.int8"}
    no_multihead = tmp_path / "no-multihead"
    no_multihead.mkdir()
    for name in ("joint.int8.tflite", "joint.float32.tflite"):
        shutil.copy(edge_fx / "models" / name, no_multihead)
    proc = subprocess.run([sys.executable, "-m", "edge", "live", str(no_multihead), "-"], capture_output=True,
                          text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and "choose one with --variant" in proc.stderr


def test_python_api(edge_fx, frames_dir):
    import edge

    clf = edge.load(edge_fx / "models")
    assert clf.variant == "multihead.int8" and clf.heads == ("make", "type")
    from PIL import Image

    path = frames_dir / "f000.jpg"
    want = clf.predict(path, top_k=2)
    assert clf.predict(path.read_bytes(), top_k=2) == want == clf.predict(str(path), top_k=2)
    img = Image.open(path)
    assert clf.predict(img) == clf.predict(np.asarray(img.convert("RGB")))
    assert set(want) == {"make", "type"} and len(want["make"]) == 2
    with pytest.raises(edge.errors.PolyheadError, match="expected a uint8"):
        clf.predict(np.zeros((4, 4, 3), np.float32))
    if shutil.which("ffmpeg"):
        records = list(clf.live(str(mjpeg_video(frames_dir, frames_dir.parent / "api.avi")), smooth_s=0))
        assert [r["seq"] for r in records if "seq" in r and "event" not in r] == list(range(12))
        first = records[0]["heads"]
        assert first["make"]["raw"][0] == [want["make"][0][0], pytest.approx(want["make"][0][1], abs=1e-6)]


def test_import_edge_does_no_work():
    code = "import sys, edge; assert 'numpy' not in sys.modules and 'PIL' not in sys.modules; print(edge.load.__module__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout.strip() == "edge.api", proc.stderr


def test_cli_defaults_are_the_library_defaults():
    from edge.cli import main
    from edge.live.session import LiveOptions

    params = {p.name: p.default for p in main.commands["live"].params}
    o = LiveOptions()
    assert params["nothing_label"] is None and o.nothing_label is None  # the default run has no such class
    assert (params["min_score"], params["margin"], params["smooth_s"], params["stall_s"], params["retry_max_s"],
            params["top_k"]) == (o.min_score, o.margin, o.smooth_s, o.stall_s, o.retry_max_s, o.top_k)
    assert int(params["max_frame_mb"] * (1 << 20)) == o.max_frame_bytes and params["max_frame_pixels"] == o.max_frame_pixels


def test_table_output_status_line_on_a_terminal_and_lines_in_a_pipe():
    import io

    from edge.live.output import Printer

    record = {"seq": 7, "time": 1.0, "source_time": 0.9, "age_ms": 12.5, "decode_ms": 1.0, "invoke_ms": 2.0,
              "fps": 29.7, "dropped": 3, "corrupt": 0,
              "heads": {"make": {"raw": [["bmw", 0.6]], "smoothed": [["audi", 0.7]]},
                        "type": {"raw": [["van", 0.9]], "smoothed": [["van", 0.8]]}}}
    change = {"event": "change", "time": 1.0, "seq": 7, "head": "make", "label": "audi", "score": 0.95,
              "previous": None}

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, tty = io.StringIO(), Tty()
    for stream in (pipe, tty):
        p = Printer("table", stream)
        p(record)
        p(record)
        p(change)
        p.close()
    assert pipe.getvalue().splitlines()[0] == ("#7   29.7 fps  age   12.5 ms  dropped 3  corrupt 0  |  "
                                               "make: audi 0.70 (now bmw 0.60)  |  type: van 0.80")
    assert pipe.getvalue().splitlines()[2] == "[change] make: audi (0.95) (was nothing)"
    assert tty.getvalue().count("\n") == 1 and tty.getvalue().count("\r\x1b[K") == 3
    jl = io.StringIO()
    Printer("jsonl", jl)(record)
    assert json.loads(jl.getvalue()) == record


def test_http_url_that_is_not_multipart_goes_through_ffmpeg(model, frames_dir, tmp_path):
    need_ffmpeg()
    import functools
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    mjpeg_video(frames_dir, tmp_path / "clip.avi")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = Live(model, f"http://127.0.0.1:{server.server_address[1]}/clip.avi")
    try:
        live.wait_for(lambda r: "seq" in r and "event" not in r)
        live.proc.send_signal(signal.SIGTERM)
        assert live.finish() == 0, live.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert "reading it with ffmpeg" in live.stderr and _check_records(live)["reason"] == "SIGTERM"


def test_a_recording_on_stdin_runs_every_frame(model, tmp_path):
    clip = tmp_path / "clip.mjpeg"
    clip.write_bytes(b"".join(jpeg_frames(10)))
    with clip.open("rb") as f:
        live = Live(model, "-", stdin=f)
        assert live.finish() == 0, live.stderr
    end = _check_records(live)
    assert [r["seq"] for r in live.results] == list(range(10)) and end["dropped"] == 0
