"""``make bench``'s live figures (issue 22, "Targets"): ``polyhead-edge live`` against sources of known
timing, each in a fresh process, as a user runs it.

- **rates**: a writer sends camera-like JPEGs (640x480) on the command's stdin at 10, 30 and 60 fps
  on a fixed schedule and logs when it sent each sequence number. Over ``seconds`` after a warm-up:
  sustained fps against min(source fps, the compute limit from the same run's median decode and
  invoke ms); frame age at result (the writer's send time to the moment the JSON line is read) p95
  against one source interval + decode + invoke + 10 ms, and its trend (least-squares slope).
- **slow model**: the source at three times the compute limit: sequence numbers strictly increase,
  every frame is a result, a drop or a corrupt one (the ``end`` record), the age stays bounded.
- **memory**: RSS, threads and open files of the command, sampled every second over a soak at 30 fps
  after the warm-up; the RSS slope in MB per 10 minutes.
- **reconnect**: an HTTP MJPEG camera on 127.0.0.1 (edge.live.hub's server, 30 fps) goes away and
  comes back on the same port; seconds from its return to the next result.
- **video accuracy**: an MJPEG file made by concatenating the test JPEGs (no re-encoding) gives the
  same per-frame labels as ``predict`` on those files (through ffmpeg when it is installed, else the
  same bytes on stdin, one frame per result).

``python -m report.benchmarks.live DEPLOYMENT IMAGES`` runs it alone; ``report.benchmarks.suite`` calls
``run_live_bench`` and keeps the record under ``live``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from edge.errors import PolyheadError

RATES = (10, 30, 60)
FRAME_SIZE = (640, 480)
AGE_SLACK_MS = 10.0  # the "+ 10 ms"
TREND_LIMIT_MS = 10.0  # "no upward trend": the fitted age rises by at most this over the window
RSS_SLOPE_LIMIT_MB = 1.0  # per 10 minutes
RESUME_LIMIT_S = 2.0


class LiveBenchError(PolyheadError):
    """The live figures cannot start (no images, no deployment); one line."""


def live_cli() -> list[str]:
    """``polyhead-edge live`` of this environment (report.pipeline.edge_cli)."""
    from report.pipeline import edge_cli

    return [*edge_cli(), "live"]


def camera_frames(images: Sequence[Path], count: int = 8, size: tuple[int, int] = FRAME_SIZE) -> list[bytes]:
    """``count`` camera-sized JPEGs (quality 85) made from the first images: what a 640x480 MJPEG
    camera sends, so decode time is a camera's, not a thumbnail's."""
    from PIL import Image

    frames = []
    for path in list(images)[:count]:
        out = io.BytesIO()
        with Image.open(path) as im:
            im.convert("RGB").resize(size, Image.BILINEAR).save(out, "JPEG", quality=85)
        frames.append(out.getvalue())
    if not frames:
        raise LiveBenchError("no images to make camera frames from")
    return frames


class PacedWriter(threading.Thread):
    """Writes ``frames`` (cycled) to ``stream`` at ``fps`` on a fixed schedule of slots (slot k at
    t0 + k/fps); ``sent[i]`` is the monotonic time frame i started to go out. Like a camera, a writer
    that falls behind (descheduled, or a full pipe) skips the slots it missed instead of sending a
    burst; ``skipped`` counts them. Stops after ``duration_s``, on ``stop``, or when the reader goes
    away; then closes the stream."""

    def __init__(self, stream, frames: Sequence[bytes], fps: float, duration_s: float) -> None:
        super().__init__(name="live-bench-writer", daemon=True)
        self.stream, self.frames, self.fps, self.duration_s = stream, frames, fps, duration_s
        self.sent: list[float] = []
        self.late_ms: list[float] = []  # per frame: how far behind its slot it went out
        self.skipped: list[float] = []  # when each missed slot was skipped
        self.stop = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        slot = 0
        try:
            while not self.stop.is_set():
                due = t0 + slot / self.fps
                if due - t0 > self.duration_s:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    self.stop.wait(wait)
                now = time.monotonic()
                self.late_ms.append((now - due) * 1000)
                self.sent.append(now)
                self.stream.write(self.frames[len(self.sent) % len(self.frames)])
                self.stream.flush()
                slot += 1
                behind = int((time.monotonic() - t0) * self.fps) - slot
                if behind > 0:
                    slot += behind
                    self.skipped += [time.monotonic()] * behind
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                self.stream.close()
            except OSError:
                pass


class LiveProcess:
    """``polyhead-edge live DEPLOYMENT SOURCE --format jsonl`` with its lines timestamped as they are
    read (``lines``: (monotonic time, record)) and its /proc figures at hand."""

    def __init__(self, deployment: Path, source: str, variant: str | None, threads: int = 1,
                 extra: Sequence[str] = ()) -> None:
        command = [*live_cli(), str(deployment), source, "--format", "jsonl", "--threads", str(threads), *extra]
        if variant:
            command += ["--variant", variant]
        self.command = command
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE if source == "-" else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.first_result = threading.Event()
        self.changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="live-bench-lines", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            now = time.monotonic()
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            with self.changed:
                self.lines.append((now, record))
                self.changed.notify_all()
            if "seq" in record and "event" not in record:
                self.first_result.set()

    def results(self) -> list[tuple[float, dict[str, Any]]]:
        with self.changed:
            return [(t, r) for t, r in self.lines if "event" not in r]

    def events(self, kind: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        with self.changed:
            return [(t, r) for t, r in self.lines if "event" in r and (kind is None or r["event"] == kind)]

    def wait_results(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while sum("event" not in r for _, r in self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self.changed.wait(min(left, 0.5))
        return True

    def proc_figures(self) -> dict[str, float]:
        """RSS (MB), threads and open files of the command, from /proc."""
        pid = self.proc.pid
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
                "open_files": len(os.listdir(f"/proc/{pid}/fd"))}

    def error_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def finish(self, timeout: float = 30) -> int:
        """Close stdin (the source ends) or, for other sources, send SIGINT; wait; the exit status."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        else:
            self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(timeout=10)
        return rc

    def check_started(self, timeout: float = 120) -> None:
        if not self.first_result.wait(timeout):
            rc = self.proc.poll()
            raise RuntimeError(f"polyhead-edge live gave no result in {timeout:.0f} s"
                               f"{'' if rc is None else f' (exit {rc})'}: {self.error_tail()}")


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def _median(values: Sequence[float]) -> float | None:
    return round(float(np.median(values)), 3) if len(values) else None


def _slope_per_s(times: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` over ``times`` (per second), None under 3 points."""
    if len(times) < 3 or max(times) - min(times) <= 0:
        return None
    return float(np.polyfit(np.asarray(times) - times[0], np.asarray(values, dtype=float), 1)[0])


def _strictly_increasing(seqs: Sequence[int]) -> bool:
    return all(b > a for a, b in zip(seqs, seqs[1:], strict=False))


def _end_accounting(live: LiveProcess, sent: int) -> dict[str, Any]:
    """The ``end`` record's counts: every frame sent was read, and each is a result, a drop or corrupt."""
    ends = live.events("end")
    if not ends:
        return {"end_record": False}
    end = ends[-1][1]
    frames, results, dropped, corrupt = (end.get(k) for k in ("frames", "results", "dropped", "corrupt"))
    out = {"end_record": True, "frames_sent": sent, "frames_read": frames, "results": results, "dropped": dropped,
           "corrupt": corrupt}
    if None not in (frames, results, dropped, corrupt):
        out["every_frame_accounted"] = frames == sent and results + dropped + corrupt == frames
    return out


def window_figures(live: LiveProcess, sent: Sequence[float], fps: float, start: float, end: float) -> dict[str, Any]:
    """The figures of the results whose line was read in [start, end)."""
    rows = [(t, r) for t, r in live.results() if start <= t < end]
    window = end - start
    decode = [float(r["decode_ms"]) for _, r in rows if "decode_ms" in r]
    invoke = [float(r["invoke_ms"]) for _, r in rows if "invoke_ms" in r]
    ages = [(t - sent[r["seq"]]) * 1000 for t, r in rows if r["seq"] < len(sent)]
    times = [t for t, r in rows if r["seq"] < len(sent)]
    dec, inv = _median(decode), _median(invoke)
    compute = [d + i for _, r in rows if "decode_ms" in r and "invoke_ms" in r
               for d, i in [(float(r["decode_ms"]), float(r["invoke_ms"]))]]
    compute_fps = 1000 / (dec + inv) if dec is not None and inv is not None and dec + inv > 0 else None
    expected = min(fps, compute_fps) if compute_fps else fps
    sustained = len(rows) / window if window > 0 else 0.0
    slope = _slope_per_s(times, ages)
    p95 = _pct(ages, 95)
    age_target = 1000 / fps + (dec or 0) + (inv or 0) + AGE_SLACK_MS
    seqs = [r["seq"] for _, r in live.results()]
    # The command's own clock between consecutive results: compute-bound, this minus decode + invoke
    # is what the rest of a cycle costs (hand-offs, smoothing, output) on this machine at this load.
    stamps = [float(r["time"]) for _, r in rows if "time" in r]
    interval = _median(list(np.diff(stamps) * 1000)) if len(stamps) > 2 else None
    return {
        "source_fps": fps, "window_s": round(window, 1), "results": len(rows),
        "sustained_fps": round(sustained, 2), "compute_limit_fps": round(compute_fps, 1) if compute_fps else None,
        "expected_fps": round(expected, 2), "fps_ratio": round(sustained / expected, 3) if expected else None,
        "fps_ok": bool(expected and sustained >= 0.9 * expected),
        "decode_ms_p50": dec, "invoke_ms_p50": inv, "compute_ms_p95": _pct(compute, 95) or 0.0,
        "result_interval_ms_p50": interval,
        # The target's limit uses medians; throughput follows the mean, which a loaded machine's long
        # tail pulls up: a sustained rate near this one means no cost beyond decode + invoke.
        "compute_limit_fps_from_means": round(1000 / float(np.mean(compute)), 1) if compute else None,
        "age_ms_p50": _pct(ages, 50), "age_ms_p95": p95, "age_ms_max": _pct(ages, 100),
        "cli_age_ms_p95": _pct([float(r["age_ms"]) for _, r in rows if "age_ms" in r], 95),
        "age_target_ms": round(age_target, 1), "age_ok": p95 is not None and p95 <= age_target,
        "age_slope_ms_per_min": round(slope * 60, 3) if slope is not None else None,
        "age_trend_ms_over_window": round(slope * window, 2) if slope is not None else None,
        "age_trend_ok": slope is not None and slope * window <= TREND_LIMIT_MS,
        "seq_strictly_increasing": _strictly_increasing(seqs),
        "dropped": rows[-1][1].get("dropped") if rows else None,
        "dropped_in_window": rows[-1][1]["dropped"] - rows[0][1]["dropped"] if rows and "dropped" in rows[0][1] else None,
    }


def measure_rate(deployment: Path, variant: str | None, frames: Sequence[bytes], fps: float, warmup_s: float,
                 seconds: float, threads: int = 1) -> dict[str, Any]:
    """One source rate: the stdin writer at ``fps`` for warm-up + ``seconds``; the window's figures."""
    live = LiveProcess(deployment, "-", variant, threads)
    writer = PacedWriter(live.proc.stdin, frames, fps, duration_s=3600)
    writer.start()
    try:
        live.check_started()
        start = time.monotonic() + warmup_s
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        end = time.monotonic()
        writer.stop.set()
        writer.join(timeout=10)
        rc = live.finish()
    finally:
        writer.stop.set()
        if live.proc.poll() is None:
            live.proc.kill()
            live.proc.wait()
    figures = window_figures(live, writer.sent, fps, start, end)
    # A full pipe holds the writer back: in the window that means the command stopped draining.
    late = [ms for t, ms in zip(writer.sent, writer.late_ms, strict=False) if start <= t < end]
    figures.update(_end_accounting(live, len(writer.sent)), exit_status=rc,
                   writer_max_late_ms_in_window=round(max(late), 1) if late else None,
                   writer_skipped_slots_in_window=sum(start <= t < end for t in writer.skipped))
    return figures


def measure_slow(deployment: Path, variant: str | None, frames: Sequence[bytes], compute_fps: float,
                 warmup_s: float, seconds: float, threads: int = 1, max_fps: float = 500) -> dict[str, Any]:
    """The source faster than the model (three times its compute limit, at most ``max_fps``)."""
    fps = min(3 * compute_fps, max_fps)
    figures = measure_rate(deployment, variant, frames, fps, warmup_s, seconds, threads)
    # A frame may arrive just after the model took the previous one: it waits one compute, then its
    # own; p95 of the age against p95 of the compute.
    bound = 1000 / fps + 2 * figures["compute_ms_p95"] + AGE_SLACK_MS
    figures.update(source_faster_than_model=fps > (figures["compute_limit_fps"] or 0),
                   age_bound_ms=round(bound, 1),
                   age_bounded=bool(figures["age_ms_p95"] is not None and figures["age_ms_p95"] <= bound
                                    and figures["age_trend_ok"]),
                   drops_counted=bool(figures.get("every_frame_accounted")) and (figures.get("dropped") or 0) > 0)
    return figures


def measure_soak(deployment: Path, variant: str | None, frames: Sequence[bytes], warmup_s: float, soak_s: float,
                 fps: float = 30, threads: int = 1, every_s: float = 1.0) -> dict[str, Any]:
    """RSS, threads and open files over ``soak_s`` at ``fps`` after the warm-up."""
    live = LiveProcess(deployment, "-", variant, threads)
    writer = PacedWriter(live.proc.stdin, frames, fps, duration_s=3600)
    writer.start()
    samples: list[tuple[float, dict[str, float]]] = []
    try:
        live.check_started()
        time.sleep(warmup_s)
        t0 = time.monotonic()
        while time.monotonic() - t0 < soak_s and live.proc.poll() is None:
            samples.append((time.monotonic() - t0, live.proc_figures()))
            time.sleep(every_s)
        writer.stop.set()
        writer.join(timeout=10)
        rc = live.finish()
    finally:
        writer.stop.set()
        if live.proc.poll() is None:
            live.proc.kill()
            live.proc.wait()
    if not samples:
        raise RuntimeError(f"no memory sample: {live.error_tail()}")
    times = [t for t, _ in samples]
    rss = [s["rss_mb"] for _, s in samples]
    threads_seen = [s["threads"] for _, s in samples]
    files = [s["open_files"] for _, s in samples]
    slope = _slope_per_s(times, rss)
    return {
        "source_fps": fps, "soak_s": round(times[-1], 1), "samples": len(samples), "exit_status": rc,
        "results": len(live.results()),
        "rss_mb_first": round(rss[0], 2), "rss_mb_last": round(rss[-1], 2), "rss_mb_max": round(max(rss), 2),
        "rss_slope_mb_per_10min": round(slope * 600, 3) if slope is not None else None,
        "rss_ok": slope is not None and slope * 600 <= RSS_SLOPE_LIMIT_MB,
        "threads_min": min(threads_seen), "threads_max": max(threads_seen),
        "open_files_min": min(files), "open_files_max": max(files),
        "threads_and_files_flat": min(threads_seen) == max(threads_seen) and min(files) == max(files),
    }


class _Camera:
    """An HTTP MJPEG camera on 127.0.0.1 (edge.live.hub's server): a thread publishes ``frames`` at
    ``fps``; ``down()`` closes the server and every stream, ``up()`` serves again on the same port."""

    def __init__(self, frames: Sequence[bytes], fps: float = 30) -> None:
        from edge.live.hub import FrameHub

        self.hub, self.frames, self.fps = FrameHub(), frames, fps
        self.port = 0
        self.server = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, name="live-bench-camera", daemon=True)

    def _feed(self) -> None:
        i = 0
        t0 = time.monotonic()
        while not self.stop.wait(max(0.0, t0 + i / self.fps - time.monotonic())):
            self.hub.publish({"seq": i}, self.frames[i % len(self.frames)])
            i += 1

    def up(self) -> float:
        from edge.live.hub import start_server

        self.server = start_server(self.hub, port=self.port)
        self.port = self.server.port
        if not self.thread.is_alive():
            self.thread.start()
        return time.monotonic()

    def down(self) -> float:
        if self.server is not None:
            self.server.close()
            self.server = None
        return time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self.down()
        self.hub.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"


def measure_reconnect(deployment: Path, variant: str | None, frames: Sequence[bytes], warmup_s: float,
                      cycles: int = 3, outage_s: float = 3.0, threads: int = 1) -> dict[str, Any]:
    """Seconds from the camera's return to the next result, over ``cycles`` outages of ``outage_s``."""
    camera = _Camera(frames)
    camera.up()
    live = LiveProcess(deployment, camera.url, variant, threads)
    resumes, downs = [], []
    try:
        live.check_started()
        time.sleep(warmup_s)
        for _ in range(cycles):
            downs.append(camera.down())
            time.sleep(outage_s)
            back = camera.up()
            deadline = back + 30
            resumed = None
            while time.monotonic() < deadline and resumed is None:
                later = [t for t, _ in live.results() if t > back]
                resumed = later[0] if later else None
                time.sleep(0.02)
            resumes.append(round(resumed - back, 3) if resumed is not None else None)
            time.sleep(1.0)
        rc = live.finish()
    finally:
        if live.proc.poll() is None:
            live.proc.kill()
            live.proc.wait()
        camera.close()
    seqs = [r["seq"] for _, r in live.results()]
    done = [r for r in resumes if r is not None]
    lost_times = [t for t, _ in live.events("lost")]
    lost_after = [next((round(t - down, 3) for t in lost_times if t > down), None) for down in downs]
    return {
        "cycles": cycles, "outage_s": outage_s, "resume_s": resumes, "resume_s_max": max(done) if done else None,
        "resume_ok": len(done) == cycles and max(done) <= RESUME_LIMIT_S,
        "lost_event_after_s": lost_after, "lost_events": len(live.events("lost")),
        "restored_events": len(live.events("restored")), "seq_strictly_increasing": _strictly_increasing(seqs),
        "exit_status": rc,
    }


def _predict_labels(deployment: Path, variant: str | None, images: Sequence[Path]) -> list[dict[str, Any]]:
    from report.pipeline import edge_cli

    command = [*edge_cli(), "predict", str(deployment), *map(str, images), "--format", "jsonl"]
    if variant:
        command += ["--variant", variant]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if len(rows) != len(images):
        raise RuntimeError(f"predict gave {len(rows)} records for {len(images)} images: "
                           f"{(out.stderr.strip().splitlines() or [''])[-1]}")
    return rows


def measure_video(deployment: Path, variant: str | None, images: Sequence[Path], work: Path) -> dict[str, Any]:
    """Per-frame labels of an MJPEG file of ``images`` (their bytes concatenated) against ``predict``."""
    work.mkdir(parents=True, exist_ok=True)
    video = work / "test_images.mjpeg"
    blobs = [p.read_bytes() for p in images]
    video.write_bytes(b"".join(blobs))
    expected = _predict_labels(deployment, variant, images)
    via_ffmpeg = shutil.which("ffmpeg") is not None
    if via_ffmpeg:
        live = LiveProcess(deployment, str(video), variant)
        rc = live.proc.wait(timeout=600)
        live._reader.join(timeout=10)
        how = f"polyhead-edge live {video.name} (a video file: ffmpeg, -c:v copy, every frame)"
    else:
        # No ffmpeg: the same bytes on stdin, each frame sent once the previous one's result is out
        # (stdin is a live source: sent faster, frames would be dropped, by design).
        live = LiveProcess(deployment, "-", variant, extra=("--smooth", "0"))
        try:
            for i, blob in enumerate(blobs):
                live.proc.stdin.write(blob)
                live.proc.stdin.flush()
                if not live.wait_results(i + 1, 60):
                    raise RuntimeError(f"no result for frame {i}: {live.error_tail()}")
        finally:
            rc = live.finish()
        how = f"{video.name} on stdin, one frame per result (ffmpeg is not installed here)"
    results = {r["seq"]: r for _, r in live.results()}
    agree = compared = 0
    max_delta = 0.0
    mismatches = []
    for i, want in enumerate(expected):
        got = results.get(i)
        if got is None or "heads" not in want:
            continue
        compared += 1
        same = True
        for head, res in want["heads"].items():
            label, score = got["heads"][head]["raw"][0]
            same &= label == res["label"]
            max_delta = max(max_delta, abs(float(score) - float(res["score"])))
        agree += same
        if not same and len(mismatches) < 5:
            mismatches.append(images[i].name)
    return {"frames": len(images), "results": len(results), "compared": compared, "same_labels": agree,
            "all_same": compared == len(images) and agree == compared,
            "max_abs_score_delta": round(max_delta, 6), "mismatches": mismatches, "how": how, "exit_status": rc}


def run_live_bench(deployment: Path, images_dir: Path, seconds: float = 30, soak_s: float = 60,
                   warmup_s: float = 5, variant: str | None = "multihead.int8", threads: int = 1,
                   rates: Sequence[float] = RATES, video_frames: int = 60,
                   work: Path | None = None) -> dict[str, Any]:
    """Every live figure; one that fails is recorded under ``errors`` and the rest go on."""
    from edge.runtime.labels import list_images

    images = [p for p in list_images(images_dir) if p.suffix.lower() in (".jpg", ".jpeg")]
    if not images:
        raise LiveBenchError(f"{images_dir}: no JPEG images for the live benchmark")
    frames = camera_frames(images)
    work = work or Path("build") / "live-bench"
    load = os.getloadavg()[0]
    live: dict[str, Any] = {
        "deployment": str(deployment), "variant": variant, "threads": threads, "seconds": seconds,
        "warmup_s": warmup_s, "soak_s": soak_s, "frame_size": list(FRAME_SIZE),
        "frame_kb": round(float(np.mean([len(f) for f in frames])) / 1024, 1),
        "load_average_start": round(load, 2), "cpu_count": os.cpu_count(), "rates": {},
    }

    def step(name: str, fn) -> Any:
        click.echo(f"[live bench] {name} ...", err=True)
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the figures keep going whatever one raises
            from edge.errors import first_line

            live.setdefault("errors", {})[name] = f"{type(e).__name__}: {first_line(e)}"
            return None

    for fps in rates:
        figures = step(f"{fps:g} fps", lambda fps=fps: measure_rate(deployment, variant, frames, fps, warmup_s,
                                                                    seconds, threads))
        if figures is not None:
            live["rates"][f"{fps:g}"] = figures
    limits = [r["compute_limit_fps"] for r in live["rates"].values() if r.get("compute_limit_fps")]
    if limits:
        compute = float(np.median(limits))
        live["slow_model"] = step("slow model", lambda: measure_slow(deployment, variant, frames, compute,
                                                                     warmup_s, min(seconds, 30), threads))
    if soak_s > 0:
        live["memory"] = step("memory soak", lambda: measure_soak(deployment, variant, frames, warmup_s, soak_s,
                                                                  threads=threads))
    live["reconnect"] = step("reconnect", lambda: measure_reconnect(deployment, variant, frames, warmup_s,
                                                                    threads=threads))
    live["video_accuracy"] = step("video accuracy", lambda: measure_video(deployment, variant,
                                                                          images[:video_frames], work))
    live["load_average_end"] = round(os.getloadavg()[0], 2)
    return live


def _yes(ok: Any) -> str:
    return "ok" if ok else "MISSED"


def live_table(live: dict[str, Any]) -> str:
    """The printed live figures, one line each with its target."""
    lines = [f"live ({live.get('variant')}, {live.get('frame_size', ['?'])[0]}x{live.get('frame_size', ['?', '?'])[1]}"
             f" JPEGs of {live.get('frame_kb')} kB on stdin, {live.get('seconds')} s after {live.get('warmup_s')} s"
             f" warm-up; load {live.get('load_average_start')} -> {live.get('load_average_end')} on "
             f"{live.get('cpu_count')} CPUs)"]
    for fps, r in (live.get("rates") or {}).items():
        lines.append(f"  {fps:>3} fps source: {r['sustained_fps']} fps sustained / {r['expected_fps']} expected "
                     f"(compute limit {r['compute_limit_fps']}) = {r['fps_ratio']} [{_yes(r['fps_ok'])} >= 0.9]; "
                     f"age p95 {r['age_ms_p95']} ms [{_yes(r['age_ok'])} <= {r['age_target_ms']}], trend "
                     f"{r['age_trend_ms_over_window']} ms over the window [{_yes(r['age_trend_ok'])}]")
    s = live.get("slow_model")
    if s:
        lines.append(f"  slow model ({s['source_fps']:.0f} fps source, compute limit {s['compute_limit_fps']}): seq "
                     f"strictly increasing {s['seq_strictly_increasing']}, {s.get('dropped')} dropped, every frame "
                     f"accounted {s.get('every_frame_accounted')}, age p95 {s['age_ms_p95']} ms "
                     f"[{_yes(s['age_ms_p95'] is not None and s['age_ms_p95'] <= s['age_bound_ms'])} <= "
                     f"{s['age_bound_ms']}], trend {s.get('age_trend_ms_over_window')} ms over the window "
                     f"[{_yes(s.get('age_trend_ok'))}]")
    m = live.get("memory")
    if m:
        lines.append(f"  memory ({m['soak_s']} s at {m['source_fps']} fps): RSS {m['rss_mb_first']} -> "
                     f"{m['rss_mb_last']} MB, slope {m['rss_slope_mb_per_10min']} MB/10 min "
                     f"[{_yes(m['rss_ok'])} <= 1]; threads {m['threads_min']}-{m['threads_max']}, open files "
                     f"{m['open_files_min']}-{m['open_files_max']} [{_yes(m['threads_and_files_flat'])} flat]")
    c = live.get("reconnect")
    if c:
        lines.append(f"  reconnect: results resume {c['resume_s']} s after the camera returns "
                     f"[{_yes(c['resume_ok'])} <= 2 s]; {c['lost_events']} lost / {c['restored_events']} restored events")
    v = live.get("video_accuracy")
    if v:
        lines.append(f"  video accuracy: {v['same_labels']}/{v['frames']} frames with predict's labels, max "
                     f"|dp| {v['max_abs_score_delta']} [{_yes(v['all_same'])}] ({v['how']})")
    for name, error in (live.get("errors") or {}).items():
        lines.append(f"  {name}: FAILED: {error}")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("deployment", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("images", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--seconds", default=30.0, show_default=True, help="Measured seconds per source rate.")
@click.option("--soak", "soak_s", default=60.0, show_default=True, help="Memory soak seconds (the target: 600; 0: skip).")
@click.option("--warmup", "warmup_s", default=5.0, show_default=True, help="Seconds after the first result before measuring.")
@click.option("--variant", default="multihead.int8", show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the JSON here.")
def main(deployment: Path, images: Path, seconds: float, soak_s: float, warmup_s: float, variant: str, threads: int,
         out: Path | None) -> None:
    """The live figures of DEPLOYMENT, with camera frames made from the JPEGs in IMAGES."""
    from edge.io import atomic_write_json
    from edge.log import configure_logging

    configure_logging()
    try:
        live = run_live_bench(deployment, images, seconds, soak_s, warmup_s, variant, threads)
    except PolyheadError as e:
        raise click.ClickException(str(e)) from None
    if out:
        atomic_write_json(out, live)
    click.echo(live_table(live))


if __name__ == "__main__":
    main()
