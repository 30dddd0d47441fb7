"""The live page in a real browser: Debian's chromium, headless, over the DevTools protocol.

The labels on the page must change when the stream changes: publish one label, see it; publish
another, see that one. Skipped without chromium unless POLYHEAD_REQUIRE_BROWSER=1 (``make test``).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import REQUIRE_ENV, Browser, chromium_path  # noqa: E402
from edge_fixtures import edge_fx_fixture  # noqa: E402, F401

from edge.live.annotate import annotate_jpeg  # noqa: E402
from edge.live.hub import FrameHub, start_server  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None and not os.environ.get(REQUIRE_ENV),
                       reason="chromium is not installed (apt-get install chromium)"),
]

LABEL = "document.querySelector('tr[data-head=\"{head}\"] .label')?.textContent ?? null"
IMAGE_WIDTH = "document.getElementById('frame').naturalWidth"


def result(seq: int, make: str, kind: str) -> dict:
    return {"seq": seq, "age_ms": 20.0, "dropped": seq // 2, "fps": 29.5,
            "heads": {"make": {"raw": [[make, 0.91]], "smoothed": [[make, 0.88]]},
                      "type": {"raw": [[kind, 0.75]], "smoothed": [[kind, 0.7]]}}}


def frame(rec: dict, color: tuple[int, int, int]) -> bytes:
    return annotate_jpeg(Image.new("RGB", (320, 240), color), rec)


def test_page_labels_follow_the_stream():
    hub = FrameHub()
    with start_server(hub, token="page-token") as server:
        rec = result(0, "bmw", "suv")
        hub.publish(rec, frame(rec, (30, 30, 160)))
        with Browser(server.url) as browser:
            assert browser.wait_for(LABEL.format(head="make"), "bmw") == "bmw", browser.output()[-2000:]
            assert browser.wait_for(LABEL.format(head="type"), "suv") == "suv"
            assert browser.wait_for(IMAGE_WIDTH, 320) == 320  # the MJPEG stream reached the <img>
            assert browser.evaluate("document.getElementById('dropped').textContent") == "0"
            for seq in range(1, 4):  # the stream changes: another make, another frame
                rec = result(seq, "toyota", "van")
                hub.publish(rec, frame(rec, (160, 30, 30)))
            assert browser.wait_for(LABEL.format(head="make"), "toyota") == "toyota"
            assert browser.wait_for(LABEL.format(head="type"), "van") == "van"
            assert browser.wait_for("document.getElementById('seq').textContent", "3") == "3"
            assert browser.evaluate("document.getElementById('fps').textContent") == "29.5"
            hub.publish({"event": "lost", "t": 1.0})
            assert browser.wait_for("document.getElementById('state').textContent", "lost") == "lost"
            hub.publish({"event": "restored", "t": 2.0})
            assert browser.wait_for("document.getElementById('state').textContent", "restored") == "restored"
            hub.publish(result(4, "toyota", "van"))
            assert browser.wait_for("document.getElementById('state').textContent", "live") == "live"
            shot = browser.call("Page.captureScreenshot", format="png")["data"]
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(shot))).size[0] > 0


def test_page_without_the_token_shows_nothing():
    hub = FrameHub()
    hub.publish(result(0, "bmw", "suv"))
    with start_server(hub, token="page-token") as server:
        with Browser(server.url.split("?")[0]) as browser:
            text = browser.wait_for("document.body.innerText.trim()", "forbidden: a valid token is required")
            assert text == "forbidden: a valid token is required"


REPO = Path(__file__).resolve().parents[1]


def _labels(edge_fx: Path, images: list[Path]) -> list[dict]:
    """``predict``'s top-1 label per head for each image (the live page must show the same)."""
    out = subprocess.run([sys.executable, "-m", "edge", "predict", str(edge_fx / "models"), *map(str, images),
                          "--variant", "multihead.float32", "--format", "jsonl"],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return [{h: r["label"] for h, r in json.loads(line)["heads"].items()} for line in out.stdout.splitlines()]


@pytest.mark.skipif(importlib.util.find_spec("edge.live.command") is None,
                    reason="polyhead-edge live (edge/live/command.py) is not in this tree")
def test_live_command_serves_a_page_that_follows_stdin(edge_fx, tmp_path):
    """End to end: JPEGs on the stdin of ``polyhead-edge live - --serve 0``; the page in chromium
    shows one image's label, then another's when the stream switches to it."""
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        path = tmp_path / f"c{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) // (1 + i % 4)).save(path, quality=90)
        paths.append(path)
    labels = _labels(edge_fx, paths)
    pair = next(((a, b, h) for a in range(len(paths)) for b in range(len(paths)) for h in labels[a]
                 if labels[a][h] != labels[b][h]), None)
    assert pair is not None, f"every image has the same labels: {labels[0]}"
    first, second, head = pair
    proc = subprocess.Popen([sys.executable, "-m", "edge", "live", str(edge_fx / "models"), "-",
                             "--variant", "multihead.float32", "--format", "jsonl", "--serve", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    showing = [paths[first].read_bytes()]
    stop = threading.Event()

    def feed() -> None:  # a 10 fps camera that shows whatever ``showing`` holds
        try:
            while not stop.wait(0.1):
                proc.stdin.write(showing[0])
                proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    errors: list[str] = []

    def drain_stderr() -> None:
        for raw in proc.stderr:
            errors.append(raw.decode(errors="replace"))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the JSON lines flowing
    threading.Thread(target=drain_stderr, daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            url = next((line.split(": ", 1)[1].strip() for line in list(errors)
                        if line.startswith("live page: ")), None)
            time.sleep(0.05)
        assert url and url.startswith("http://127.0.0.1:"), "".join(errors)[-1000:]
        with Browser(url) as browser:
            want = labels[first][head]
            assert browser.wait_for(LABEL.format(head=head), want, 60) == want
            assert browser.wait_for(IMAGE_WIDTH, 64, 30) == 64  # the annotated frame, full size
            showing[0] = paths[second].read_bytes()
            want = labels[second][head]
            assert browser.wait_for(LABEL.format(head=head), want, 60) == want
    finally:
        stop.set()
        writer.join(timeout=5)
        proc.stdin.close()
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    assert rc == 0, "".join(errors)[-1000:]
