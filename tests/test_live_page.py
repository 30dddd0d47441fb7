"""The live page's server (edge.live.hub) and annotated frames (edge.live.annotate), over real sockets
on 127.0.0.1: newest wins, the client cap, the token, a slow client that gets the newest frame."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from PIL import Image

from edge.errors import PolyheadError
from edge.live.annotate import annotate_jpeg, annotation_lines
from edge.live.hub import FrameHub, is_loopback, start_server


def record(seq: int, make: str = "toyota", pad: int = 0) -> dict:
    heads = {"make": {"raw": [[make, 0.9]], "smoothed": [[make, 0.8]]},
             "type": {"raw": [["suv", 0.7]], "smoothed": [["suv", 0.6]]}}
    rec = {"seq": seq, "age_ms": 12.5, "dropped": 0, "fps": 30.0, "heads": heads}
    if pad:
        rec["pad"] = "x" * pad
    return rec


def jpeg(color=(200, 30, 30), size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


def get(url: str, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def open_stream(url: str, path: str, rcvbuf: int | None = None) -> tuple[socket.socket, bytes]:
    """A raw client that sends GET ``path`` and reads the status line and headers; returns the
    socket and any body bytes already read."""
    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head + b"\r\n\r\n" + rest


def status_of(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


@pytest.fixture
def hub():
    h = FrameHub()
    yield h
    h.close()


def test_hub_keeps_only_the_newest(hub):
    for i in range(100):
        hub.publish(record(i), jpeg() if i == 50 else None)
    version, messages = hub.wait_messages(0, 0)
    assert version == 100 and [json.loads(m)["seq"] for m in messages] == [99]
    record_json, frame = hub.latest()
    assert json.loads(record_json)["seq"] == 99 and frame == jpeg()  # a record without a JPEG keeps the frame
    assert hub.wait_jpeg(51, 0) == (51, None)  # nothing newer than version 51: a timeout, no frame


def test_hub_keeps_recent_events_for_busy_readers(hub):
    hub.publish(record(0))
    hub.publish({"event": "lost", "t": 1.0})
    hub.publish({"event": "restored", "t": 2.0})
    hub.publish(record(1))
    _, messages = hub.wait_messages(1, 0)
    assert [json.loads(m).get("event", json.loads(m).get("seq")) for m in messages] == ["lost", "restored", 1]
    for i in range(100):
        hub.publish({"event": "change", "head": "make", "label": str(i)})
    _, messages = hub.wait_messages(0, 0)
    assert len(messages) <= 33  # the ring and the newest record: bounded, whoever is behind


def test_page_frame_and_latest(hub):
    with start_server(hub) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.host == "127.0.0.1"
        status, body = get(server.url, "/")
        assert status == 200 and b"polyhead live" in body and b"<script>" in body
        assert get(server.url, "/frame.jpg")[0] == 404  # no frame yet
        assert get(server.url, "/latest.json") == (200, b"null")
        hub.publish(record(7), jpeg())
        status, body = get(server.url, "/frame.jpg")
        assert status == 200 and body == jpeg()
        assert json.loads(get(server.url, "/latest.json")[1])["seq"] == 7
        assert get(server.url, "/nothing")[0] == 404


def test_page_loads_nothing_from_elsewhere(hub):
    with start_server(hub) as server:
        parts = urlsplit(server.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        text, csp = resp.read().decode(), resp.getheader("Content-Security-Policy")
        conn.close()
    assert "src=\"http" not in text and "href=\"http" not in text and "//cdn" not in text
    # Only the page's own script runs (by its hash), and it talks only to this server.
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "connect-src 'self'" in csp


def test_event_stream_sends_the_newest_record_and_events(hub):
    with start_server(hub) as server:
        sock, data = open_stream(server.url, "/events")
        try:
            assert status_of(data) == 200 and b"text/event-stream" in data
            hub.publish(record(1, "bmw"))
            hub.publish({"event": "change", "head": "make", "label": "bmw", "score": 0.8})
            while data.count(b"data: ") < 2:
                data += sock.recv(65536)
        finally:
            sock.close()
    messages = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")]
    frames = [m for m in messages if "heads" in m]
    assert frames[-1]["heads"]["make"]["smoothed"][0][0] == "bmw"
    assert [m["label"] for m in messages if m.get("event") == "change"] == ["bmw"]


def test_mjpeg_stream_sends_frames(hub):
    hub.publish(record(0), jpeg((10, 200, 10)))
    with start_server(hub) as server:
        sock, data = open_stream(server.url, "/stream.mjpg")
        try:
            assert status_of(data) == 200 and b"multipart/x-mixed-replace; boundary=" in data
            while data.count(b"\xff\xd9") < 1:
                data += sock.recv(65536)
        finally:
            sock.close()
    start = data.index(b"\xff\xd8")
    assert Image.open(io.BytesIO(data[start:data.index(b"\xff\xd9") + 2])).size == (64, 48)


def test_token_is_required_on_every_request(hub):
    hub.publish(record(0), jpeg())
    with start_server(hub, token="s3cret/+") as server:
        assert server.url.endswith("/?token=s3cret%2F%2B")
        for path in ("/", "/events", "/stream.mjpg", "/frame.jpg", "/latest.json", "/nothing"):
            assert get(server.url, path)[0] == 403, path
            assert get(server.url, path + "?token=wrong")[0] == 403, path
            assert get(server.url, path + "?token=s3cret")[0] == 403, path  # a prefix is not the token
        assert get(server.url, "/?token=s3cret%2F%2B")[0] == 200
        assert get(server.url, "/frame.jpg?token=s3cret%2F%2B") == (200, jpeg())
    with pytest.raises(PolyheadError, match="token is empty"):
        start_server(hub, token="")


def test_loopback_page_refuses_a_foreign_host_header(hub):
    """DNS rebinding: a site that resolves its name to 127.0.0.1 sends its own name as Host."""
    with start_server(hub) as server:
        assert get(server.url, "/", {"Host": "evil.example:80"})[0] == 403
        assert get(server.url, "/", {"Host": f"localhost:{server.port}"})[0] == 200


def test_client_cap_answers_503_and_frees_slots(hub):
    with start_server(hub, max_clients=1) as server:
        first, head = open_stream(server.url, "/events")
        assert status_of(head) == 200
        second, head = open_stream(server.url, "/events")
        assert status_of(head) == 503
        while chunk := second.recv(4096):
            head += chunk
        assert head.endswith(b"busy: at most 1 clients\n")
        second.close()
        video, head = open_stream(server.url, "/stream.mjpg")  # a viewer's second stream has its own cap
        assert status_of(head) == 200
        assert get(server.url, "/latest.json")[0] == 200  # one-shot requests still work
        first.close()
        hub.publish(record(1))  # the stream notices its client left on its next write
        deadline = time.monotonic() + 10
        while True:
            again, head = open_stream(server.url, "/events")
            again.close()
            if status_of(head) == 200 or time.monotonic() > deadline:
                break
            hub.publish(record(2))
            time.sleep(0.05)
        assert status_of(head) == 200
        video.close()


def test_connection_flood_is_refused_without_threads(hub):
    with start_server(hub, max_clients=1) as server:
        idle = []
        for _ in range(server.server.max_connections):
            s = socket.create_connection((server.host, server.port), timeout=10)
            idle.append(s)
        time.sleep(0.2)  # let the accept loop take them all
        extra = socket.create_connection((server.host, server.port), timeout=10)
        try:
            assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        finally:
            extra.close()
            for s in idle:
                s.close()


def _read_sse_until(sock: socket.socket, data: bytes, last_seq: int) -> list[dict]:
    while True:
        messages = [json.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: ")
                    and line.endswith(b"}")]
        if messages and messages[-1].get("seq") == last_seq:
            return messages
        chunk = sock.recv(1 << 20)
        assert chunk, "the stream ended before the newest record came"
        data += chunk


def test_slow_client_gets_the_newest_record_not_a_backlog(hub):
    """A client that reads nothing while 400 records of 64 kB pass (26 MB, more than any socket
    buffer) then gets what the buffers held and the newest: no queue grew anywhere."""
    n, pad = 400, 64_000
    with start_server(hub) as server:
        sock, data = open_stream(server.url, "/events", rcvbuf=16_384)
        try:
            for i in range(n):
                hub.publish(record(i, pad=pad))
            messages = _read_sse_until(sock, data.partition(b"\r\n\r\n")[2], n - 1)
        finally:
            sock.close()
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)) and seqs[-1] == n - 1
    assert len(seqs) < n // 4, f"{len(seqs)} of {n} records reached a client that did not read"


def test_slow_mjpeg_client_gets_the_newest_frame(hub):
    n = 300
    frames = [jpeg((i % 256, 0, 0), (320, 240)) for i in range(2)]
    big = [f + b"\x00" * 100_000 for f in frames]  # bytes after the end marker: still one JPEG each
    with start_server(hub) as server:
        sock, data = open_stream(server.url, "/stream.mjpg", rcvbuf=16_384)
        try:
            for i in range(n - 1):
                hub.publish(record(i), big[0])
            hub.publish(record(n - 1), frames[1])
            while not data.endswith(frames[1] + b"\r\n--polyheadframe\r\nContent-Type: image/jpeg\r\n\r\n"):
                chunk = sock.recv(1 << 20)
                assert chunk
                data += chunk
        finally:
            sock.close()
    assert data.count(b"Content-Type: image/jpeg") < n // 4


def test_close_ends_streams_and_frees_the_port(hub):
    server = start_server(hub)
    sock, head = open_stream(server.url, "/events")
    assert status_of(head) == 200
    server.close()
    server.close()  # twice is fine
    sock.settimeout(10)
    rest = b""
    while chunk := sock.recv(4096):
        rest += chunk
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=2)


def test_loopback_names():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("pi.local")


def test_start_server_errors_and_loopback_aliases(hub):
    # 127.0.0.2 is loopback too: no warning; a name that cannot be bound is a one-line error.
    with pytest.raises(PolyheadError, match="cannot serve the live page on"):
        start_server(hub, host="host.invalid")
    with start_server(hub, host="127.0.0.2") as server:
        assert server.url.startswith("http://127.0.0.2:")
    with pytest.raises(PolyheadError, match="max_clients must be at least 1"):
        start_server(hub, max_clients=0)


def test_annotate_draws_each_heads_label():
    image = Image.new("RGB", (320, 240), (0, 90, 0))
    data = annotate_jpeg(image, record(3, "bmw"), quality=90)
    out = Image.open(io.BytesIO(data))
    assert out.format == "JPEG" and out.size == (320, 240)
    assert image.getpixel((5, 5)) == (0, 90, 0)  # the caller's image is untouched
    plain = Image.open(io.BytesIO(annotate_jpeg(image, {"event": "lost"}, quality=90)))
    band = out.crop((0, 0, 100, 30)).convert("L").getextrema()
    assert band[1] - band[0] > 100  # white text on a dark band
    assert plain.crop((0, 0, 100, 30)).convert("L").getextrema()[1] < 80  # nothing drawn without heads
    assert annotation_lines(record(3, "bmw"))[:2] == ["make: bmw 0.80", "type: suv 0.60"]


def test_annotate_falls_back_to_raw_and_takes_any_mode():
    rec = {"seq": 1, "heads": {"make": {"raw": [["audi", 0.5]], "smoothed": []}}}
    assert annotation_lines(rec)[0] == "make: audi 0.50"
    data = annotate_jpeg(Image.new("L", (16, 16)), rec)  # tiny and grey: still a JPEG, text clipped
    assert Image.open(io.BytesIO(data)).mode == "RGB"


def test_streams_end_when_the_producer_closes_the_hub(hub):
    hub.publish(record(0), jpeg())
    with start_server(hub) as server:
        events, _ = open_stream(server.url, "/events")
        video, _ = open_stream(server.url, "/stream.mjpg")
        hub.publish({"event": "end", "t": 1.0})
        hub.close()
        for sock in (events, video):
            data = b""
            while chunk := sock.recv(65536):  # ends: no spinning on a hub that wakes at once
                data += chunk
            sock.close()
            if sock is events:
                assert b'"event":"end"' in data
