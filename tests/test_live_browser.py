"""The live page in a real browser: Debian's chromium, headless, over the DevTools protocol.

The labels on the page must change when the stream changes: publish one label, see it; publish
another, see that one. Skipped without chromium unless POLYHEAD_REQUIRE_BROWSER=1 (``make test``).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import REQUIRE_ENV, Browser, chromium_path  # noqa: E402

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
