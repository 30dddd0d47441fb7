"""``polyhead-edge live``: the command line over ``LiveRun``. It parses, loads the variant, prints
records, serves the page when asked, and stops cleanly on SIGINT and SIGTERM (the reader stopped,
any ffmpeg child reaped, an ``end`` record printed, exit status 0).

``live_command(model_options)`` builds the click command; edge/cli.py registers it (the factory
keeps this module free of an import cycle with the CLI's shared options)."""

from __future__ import annotations

import signal
from typing import Any

import click

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
ANNOTATE_EVERY_S = 0.1
"""The page's annotated frame is drawn at most 10 times a second (a full-size decode and drawing)."""


def live_command(model_options) -> click.Command:
    """The ``live`` click command, with the CLI's shared model options decorator."""

    @click.command("live")
    @click.argument("deployment", type=click.Path(exists=True))
    @click.argument("source")
    @click.option("--variant", "variant_name", default=None,
                  help="Variant id; default: the only one, else multihead (int8 when present).")
    @click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
    @click.option("--top-k", default=1, show_default=True, type=click.IntRange(1, 1000), help="Labels per head.")
    @click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64), help="Interpreter threads.")
    # The default is edge.live.session.DEFAULT_MIN_SCORE (a test checks), written out here so that
    # building the CLI does not import numpy.
    @click.option("--min-score", default=0.9, show_default=True, type=click.FloatRange(0, 1),
                  help="Smoothed score a label needs for a change event (docs/edge.md: empty scenes).")
    @click.option("--margin", default=0.1, show_default=True, type=click.FloatRange(0, 1),
                  help="Hysteresis: a new label must beat the announced one by this much; the announced one "
                       "clears below min-score minus this.")
    @click.option("--nothing-label", default=None,
                  help="A class meaning 'no car here' (a model trained with a background class, docs/edge.md): "
                       "never announced, it clears the announced label.")
    @click.option("--smooth", "smooth_s", default=0.5, show_default=True, type=click.FloatRange(0),
                  help="Time constant of the smoothing average, seconds (0: off).")
    @click.option("--stall", "stall_s", default=5.0, show_default=True, type=click.FloatRange(0),
                  help="Seconds without data before the source counts as lost (0: never, e.g. for a "
                       "camera that sends only on motion).")
    @click.option("--retry-max", "retry_max_s", default=1.0, show_default=True, type=click.FloatRange(0.1),
                  help="Longest wait between reconnect attempts, seconds.")
    @click.option("--realtime", is_flag=True,
                  help="Play a video file at its frame rate, dropping frames like a camera (default: every frame).")
    @click.option("--max-frame-mb", default=8.0, show_default=True, type=click.FloatRange(0.01),
                  help="A frame over this many MB is skipped.")
    @click.option("--max-frame-pixels", default=4096 * 4096, show_default=True, type=click.IntRange(1),
                  help="A frame with more pixels is skipped.")
    @click.option("--annotate-dir", default=None, type=click.Path(file_okay=False),
                  help="Write each result's frame, labels drawn, as SEQ.jpg here.")
    @click.option("--serve", "serve_port", default=None, type=click.IntRange(0, 65535),
                  help="Serve a live page on this port (0: any free port).")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address the page listens on; any other than 127.0.0.1 exposes the camera.")
    @click.option("--token", default=None, help="Secret the page asks for (in its URL).")
    @click.option("--max-clients", default=4, show_default=True, type=click.IntRange(1, 64),
                  help="Page viewers at once.")
    @model_options
    def live(deployment: str, source: str, variant_name: str | None, fmt: str, top_k: int, threads: int,
             min_score: float, margin: float, nothing_label: str | None, smooth_s: float, stall_s: float, retry_max_s: float,
             realtime: bool, max_frame_mb: float, max_frame_pixels: int, annotate_dir: str | None,
             serve_port: int | None, host: str, token: str | None, max_clients: int, max_input_pixels: int,
             max_arena_mb: float, trusted_key: str | None) -> None:
        """Label a live SOURCE with the model at DEPLOYMENT: one record per frame the model ran.

        SOURCE is - (JPEG/MJPEG on stdin, e.g. from rpicam-vid --codec mjpeg), an http(s) MJPEG
        camera URL, or, through ffmpeg, a video file, /dev/videoN, rtsp:// or another URL. The model
        always takes the newest frame; frames it had no time for are counted as dropped.
        """
        from edge.cli import _echo, _fail, _limits, _trusted
        from edge.errors import PolyheadError
        from edge.live.session import LiveOptions, LiveRun
        from edge.runtime.interpreter import limit_malloc_arenas
        from edge.runtime.predict import Predictor
        from edge.runtime.variants import discover, select_variant

        limit_malloc_arenas()
        options = LiveOptions(top_k=top_k, smooth_s=smooth_s,
                              min_score=min_score, margin=margin, nothing_label=nothing_label,
                              stall_s=stall_s, retry_max_s=retry_max_s, realtime=realtime,
                              max_frame_bytes=int(max_frame_mb * (1 << 20)), max_frame_pixels=max_frame_pixels)
        try:
            variant = select_variant(discover(deployment, trusted_key=_trusted(trusted_key)), variant_name)
            predictor = Predictor(variant, num_threads=threads, limits=_limits(max_input_pixels, max_arena_mb))
            run = LiveRun(predictor, source, options)
        except PolyheadError as e:
            raise _fail(e) from None
        _echo(f"{variant.id}: live from {run.source.name}, {predictor.runtime} {predictor.runtime_version}, "
              f"{threads} thread(s)", err=True)
        page = None
        if serve_port is not None:
            try:
                page = _start_page(serve_port, host, token, max_clients, _echo)
            except OSError as e:
                run.close()
                raise click.ClickException(f"cannot serve on {host}:{serve_port}: {e.strerror or e}") from None
        error = _run(run, fmt, page, annotate_dir)
        if error:
            raise click.ClickException(error)

    return live


def _start_page(port: int, host: str, token: str | None, max_clients: int, echo) -> tuple[Any, Any]:
    """(server, hub) of the live page (edge/live/hub.py)."""
    from edge.live.hub import FrameHub, start_server

    if host not in LOCAL_HOSTS:
        echo(f"warning: --host {host}: the live page (your camera) is reachable from the network"
             + ("" if token else "; anyone who can reach it sees it (set --token)"), err=True)
    hub = FrameHub()
    server = start_server(hub, host=host, port=port, token=token, max_clients=max_clients)
    echo(f"live page: {server.url}", err=True)
    return server, hub


def _run(run, fmt: str, page: tuple[Any, Any] | None, annotate_dir: str | None) -> str | None:
    """Print the run's records until it ends or a signal stops it; the error line of a failed source."""
    import time

    from edge.errors import PolyheadError
    from edge.live.output import Printer

    printer = Printer(fmt)
    server, hub = page if page is not None else (None, None)
    stop: list[str] = []

    def on_signal(signum, _frame) -> None:
        if stop:  # a second Ctrl-C: give up waiting
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)
        run.request_stop(stop[0])

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    error = None
    last_drawn = 0.0
    try:
        for record in run:
            if "event" not in record and (server is not None or annotate_dir):
                now = time.monotonic()
                if annotate_dir or now - last_drawn >= ANNOTATE_EVERY_S:
                    last_drawn = now
                    jpeg = _annotated(run.last_jpeg, record)
                    if annotate_dir:
                        from edge.io import atomic_write_bytes

                        atomic_write_bytes(f"{annotate_dir}/{record['seq']:08d}.jpg", jpeg)
                else:
                    jpeg = None
                if hub is not None:
                    hub.publish(record, jpeg)
            elif hub is not None and "event" in record:  # lost, restored, change, end: the page shows them
                hub.publish(record, None)
            try:
                printer(record)
            except BrokenPipeError:  # the reader of our stdout went away: nothing left to do
                import os
                import sys

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
                run.request_stop("stdout closed")
            if record.get("event") == "end" and record.get("error"):
                error = record["error"]
    except PolyheadError as e:
        error = str(e)
    finally:
        run.close()
        for s, h in previous.items():
            signal.signal(s, h)
        if server is not None:
            server.close()
        try:
            printer.close()
        except BrokenPipeError:
            pass
    return error


def _annotated(jpeg: bytes | None, record: dict) -> bytes | None:
    if jpeg is None:
        return None
    from edge.live.annotate import annotate_jpeg
    from edge.runtime.preprocess import open_image

    return annotate_jpeg(open_image(jpeg), record)
