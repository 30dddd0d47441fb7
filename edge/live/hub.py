"""The ``--serve`` live page: the newest result and annotated frame, served by the standard library.

A ``FrameHub`` holds one thing: the newest record (and JPEG) with a version number. Publishing
replaces it; readers wait for a version newer than the one they sent. Nothing is queued per client,
so a slow client skips to the newest frame and memory cannot grow with the number of frames or the
slowness of a client. Event lines (``lost``, ``restored``, ``change``, ``end``) also go into a short
ring, so a client that was busy when one passed still sees it on the page.

``start_server`` serves, on 127.0.0.1 unless the caller names another address:
- ``/``: the page (HTML and JS inline, no CDN): the newest frame, each head's label and score,
  fps, frame age, drops and the last events, updated live;
- ``/events``: server-sent events, one JSON record per message (the newest frame's, and events);
- ``/stream.mjpg``: the newest annotated frame as ``multipart/x-mixed-replace`` (MJPEG);
- ``/frame.jpg`` and ``/latest.json``: the newest frame and record, once.

At most ``max_clients`` event streams and ``max_clients`` MJPEG streams run at once (a viewer uses
one of each); an extra one gets 503. Connections of any kind are capped as well, and the extra ones
are answered 503 by the accept loop itself, without a thread. With a token, every request must carry
it (``?token=``; compared in constant time), or it gets 403. Bound to loopback, a request whose Host
is not a loopback name gets 403 too: that stops a web page from reaching the camera through DNS
rebinding.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

log = logging.getLogger(__name__)

EVENT_RING = 32  # recent event lines kept for clients that were busy when they passed
KEEPALIVE_S = 5.0  # an idle stream sends a comment this often, so a closed client is noticed
SEND_TIMEOUT_S = 10.0  # a client that accepts no bytes for this long is dropped (its slot freed)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


class FrameHub:
    """The newest record and JPEG, versioned. Thread-safe; newest wins, never a queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._record_version = 0  # version of the newest frame record (not an event line)
        self._record: bytes | None = None  # JSON, encoded once per publish, not once per client
        self._jpeg: bytes | None = None
        self._jpeg_version = 0
        self._events: deque[tuple[int, bytes]] = deque(maxlen=EVENT_RING)
        self._closed = False
        self._wakes = 0  # bumped by wake(): waiters return early once

    def publish(self, record: dict[str, Any], jpeg: bytes | None = None) -> None:
        """Make ``record`` (a JSON-line dict) and ``jpeg`` (its annotated frame, if any) the newest.

        An event line (a record with ``event``) joins the event ring and leaves the newest frame
        record as it was; a record without a JPEG keeps the previous frame on the page.
        """
        data = json.dumps(record, separators=(",", ":"), default=str).encode()
        with self._cond:
            self._version += 1
            if "event" in record:
                self._events.append((self._version, data))
            else:
                self._record, self._record_version = data, self._version
            if jpeg is not None:
                self._jpeg, self._jpeg_version = bytes(jpeg), self._version
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """Whether the producer has ended (``close``): streams send what is left and end."""
        return self._closed

    @property
    def version(self) -> int:
        """The number of publishes so far."""
        with self._cond:
            return self._version

    def latest(self) -> tuple[bytes | None, bytes | None]:
        """The newest frame record (JSON bytes) and JPEG, either None before the first."""
        with self._cond:
            return self._record, self._jpeg

    def wait_messages(self, after: int, timeout: float) -> tuple[int, list[bytes]]:
        """Wait up to ``timeout`` s for a version newer than ``after``; return the newest version and
        the JSON messages a client that saw ``after`` has not seen: the events since then still in
        the ring, then the newest frame record if it is newer. Never more than the ring plus one."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._version > after or self._closed or self._wakes != wakes, timeout)
            messages = [data for v, data in self._events if v > after]
            if self._record is not None and self._record_version > after:
                messages.append(self._record)
            return self._version, messages

    def wait_jpeg(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """Wait up to ``timeout`` s for a JPEG newer than version ``after``; return (its version,
        the JPEG), or (``after``, None) if none came."""
        with self._cond:
            wakes = self._wakes
            self._cond.wait_for(lambda: self._jpeg_version > after or self._closed or self._wakes != wakes,
                                timeout)
            if self._jpeg_version > after:
                return self._jpeg_version, self._jpeg
            return after, None

    def close(self) -> None:
        """Wake every waiting reader for good (the producer has ended)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake every waiting reader once (a server is shutting down)."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) can only be reached from this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


PAGE_SCRIPT = r"""
"use strict";
const q = new URLSearchParams(location.search);
const token = q.get("token");
const suffix = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
const heads = $("heads");
const rows = new Map();
const fmt = (x, d) => (typeof x === "number" && isFinite(x)) ? x.toFixed(d) : "-";
function row(head) {
  let r = rows.get(head);
  if (!r) {
    r = document.createElement("tr");
    r.dataset.head = head;
    for (const cls of ["head", "label", "score", "raw"]) {
      const td = document.createElement("td");
      td.className = cls;
      r.appendChild(td);
    }
    r.querySelector(".head").textContent = head;
    heads.appendChild(r);
    rows.set(head, r);
  }
  return r;
}
function showFrame(rec) {
  $("state").textContent = "live";  // a result means the source is delivering, whatever came before
  $("seq").textContent = rec.seq ?? "-";
  $("fps").textContent = fmt(rec.fps, 1);
  $("age").textContent = fmt(rec.age_ms, 0);
  $("dropped").textContent = rec.dropped ?? "-";
  for (const [head, res] of Object.entries(rec.heads || {})) {
    const top = (res.smoothed && res.smoothed[0]) || (res.raw && res.raw[0]) || ["-", NaN];
    const raw = (res.raw && res.raw[0]) || ["-", NaN];
    const r = row(head);
    r.querySelector(".label").textContent = top[0];
    r.querySelector(".score").textContent = fmt(top[1], 3);
    r.querySelector(".raw").textContent = raw[0] + " " + fmt(raw[1], 3);
  }
}
function showEvent(rec) {
  const text = rec.event === "change"
    ? `${rec.head}: ${rec.label} ${fmt(rec.score, 3)}`
    : rec.event + (rec.error ? ": " + rec.error : "");
  if (rec.event !== "change") $("state").textContent = rec.event;
  const li = document.createElement("li");
  li.textContent = new Date().toLocaleTimeString() + "  " + text;
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 20) list.removeChild(list.lastChild);
}
function connect() {
  const es = new EventSource("events" + suffix);
  es.onopen = () => { $("state").textContent = "live"; };
  es.onmessage = (m) => {
    const rec = JSON.parse(m.data);
    if (rec.event) showEvent(rec); else showFrame(rec);
  };
  es.onerror = () => { $("state").textContent = "disconnected, retrying"; };
}
$("frame").src = "stream.mjpg" + suffix;
connect();
"""

PAGE_STYLE = """
body { font: 15px system-ui, sans-serif; margin: 1em; background: #111; color: #eee; }
img { max-width: 100%; background: #222; min-width: 320px; min-height: 240px; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { padding: .2em .8em; text-align: left; border-bottom: 1px solid #333; }
td.label { font-weight: bold; font-size: 1.3em; }
.stats span { margin-right: 1.2em; }
#events { font-family: monospace; color: #bbb; }
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>polyhead live</title><style>{PAGE_STYLE}</style></head>
<body>
<div class="stats"><span>state <b id="state">connecting</b></span><span>seq <b id="seq">-</b></span>
<span>fps <b id="fps">-</b></span><span>frame age <b id="age">-</b> ms</span>
<span>dropped <b id="dropped">-</b></span></div>
<img id="frame" alt="newest frame">
<table><thead><tr><th>head</th><th>label (smoothed)</th><th>score</th><th>raw top-1</th></tr></thead>
<tbody id="heads"></tbody></table>
<ul id="events"></ul>
<script>{PAGE_SCRIPT}</script>
</body></html>
""".encode()

# The inline script is allowed by its hash, nothing else runs: a label that holds markup is shown as
# text anyway (textContent), and the policy is a second wall.
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(PAGE_SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
       "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
BOUNDARY = "polyheadframe"


class _Handler(BaseHTTPRequestHandler):
    server: LiveHTTPServer
    protocol_version = "HTTP/1.1"
    timeout = SEND_TIMEOUT_S  # socket timeout: a client that stops reading cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        # Through logging, and without the query string: it may hold the token.
        log.debug("%s %s", self.address_string(), (format % args).split("?", 1)[0])

    def _plain(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _headers(self, content_type: str, length: int | None = None, csp: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if csp:
            self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")  # the token is in the URL
        self.send_header("X-Frame-Options", "DENY")
        if length is None:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        server = self.server
        if server.loopback_only:
            host = self.headers.get("Host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
            if host and not is_loopback(name):  # a browser always sends Host; a rebinding one names its site
                self._plain(403, "forbidden: this page answers only to a loopback Host")
                return False
        if server.token is not None:
            given = (query.get("token") or [""])[0].encode()
            if not hmac.compare_digest(given, server.token.encode()):
                self._plain(403, "forbidden: a valid token is required")
                return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        parts = urlsplit(self.path)
        if not self._allowed(parse_qs(parts.query)):
            return
        route = parts.path
        if route in ("/", "/index.html"):
            self._headers("text/html; charset=utf-8", len(PAGE), csp=True)
            self.wfile.write(PAGE)
        elif route == "/latest.json":
            record, _ = self.server.hub.latest()
            body = record or b"null"
            self._headers("application/json", len(body))
            self.wfile.write(body)
        elif route == "/frame.jpg":
            _, jpeg = self.server.hub.latest()
            if jpeg is None:
                self._plain(404, "no frame yet")
                return
            self._headers("image/jpeg", len(jpeg))
            self.wfile.write(jpeg)
        elif route == "/events":
            self._stream(self.server.event_slots, self._events)
        elif route == "/stream.mjpg":
            self._stream(self.server.mjpeg_slots, self._mjpeg)
        else:
            self._plain(404, "not found")

    def do_HEAD(self) -> None:  # noqa: N802 - the base class's name
        self._plain(405, "method not allowed")

    def _stream(self, slots: threading.BoundedSemaphore, body) -> None:
        if not slots.acquire(blocking=False):
            self._plain(503, f"busy: at most {self.server.max_clients} clients")
            return
        try:
            body()
        except (OSError, ValueError):  # the client went away or stopped reading: free the slot
            pass
        finally:
            slots.release()
            self.close_connection = True

    def _events(self) -> None:
        hub, server = self.server.hub, self.server
        self._headers("text/event-stream; charset=utf-8")
        self.wfile.write(b"retry: 1000\n\n")
        self.wfile.flush()
        seen = 0
        while not server.stopping:
            version, messages = hub.wait_messages(seen, KEEPALIVE_S)
            if server.stopping:
                break
            if not messages and hub.closed:
                break  # a closed hub wakes at once: end the stream instead of spinning
            if not messages:
                if version == seen:
                    self.wfile.write(b": keep-alive\n\n")  # notices a closed client
                    self.wfile.flush()
                seen = version
                continue
            # One write per wake-up; while it blocks on a slow client, newer records replace the
            # hub's, and the next wake-up sends only the newest.
            self.wfile.write(b"".join(b"id: %d\ndata: %s\n\n" % (version, m) for m in messages))
            self.wfile.flush()
            seen = version
            if hub.closed and hub.version == seen:
                break  # the producer ended and everything it published has gone out

    def _mjpeg(self) -> None:
        hub, server = self.server.hub, self.server
        self._headers(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        # Each part is followed at once by the next boundary and part header: chromium shows a part
        # only once the next part has begun, and the next frame may be a while coming. So the parts
        # carry no Content-Length; the boundary ends each one.
        part_head = b"--%s\r\nContent-Type: image/jpeg\r\n\r\n" % BOUNDARY.encode()
        self.wfile.write(part_head)
        seen = 0
        while not server.stopping:
            version, jpeg = hub.wait_jpeg(seen, KEEPALIVE_S)
            if server.stopping:
                break
            if jpeg is None:
                if hub.closed:
                    break  # a closed hub wakes at once: end the stream instead of spinning
                continue
            self.wfile.write(jpeg + b"\r\n" + part_head)
            self.wfile.flush()
            seen = version


class LiveHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that caps its connections and knows its hub, token and client cap."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], hub: FrameHub, token: str | None, max_clients: int) -> None:
        self.hub, self.token, self.max_clients = hub, token, max_clients
        self.event_slots = threading.BoundedSemaphore(max_clients)
        self.mjpeg_slots = threading.BoundedSemaphore(max_clients)
        # Two streams per viewer, and room for page, frame and refused requests beside them.
        self.max_connections = 2 * max_clients + 4
        self._connections = threading.BoundedSemaphore(self.max_connections)
        self.stopping = False
        self.loopback_only = is_loopback(address[0])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            # Refused in the accept loop: a flood of connections cannot start a flood of threads.
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                b"Content-Length: 16\r\nConnection: close\r\n\r\ntoo many clients")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class LiveServer:
    """A running live page: ``url`` (with the token, if any) and ``close()``."""

    def __init__(self, server: LiveHTTPServer, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop serving: the streams end, the port is freed. Safe to call twice."""
        if self.server.stopping:
            return
        self.server.stopping = True
        self.server.hub.wake()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(hub: FrameHub, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 max_clients: int = 4) -> LiveServer:
    """Serve ``hub``'s live page on ``host``:``port`` (0: any free port) in a background thread.

    127.0.0.1 unless the caller chooses otherwise (``polyhead-edge live --host`` warns when it is not
    loopback). ``token``: required on every request (403 otherwise).
    ``max_clients``: concurrent viewers (each one event stream and one MJPEG stream; 503 beyond).
    """
    from edge.errors import PolyheadError

    if max_clients < 1:
        raise PolyheadError(f"max_clients must be at least 1, got {max_clients}")
    if token is not None and not token:
        raise PolyheadError("the live page token is empty: give a non-empty one, or none")
    try:
        server = LiveHTTPServer((host, port), hub, token, max_clients)
    except OSError as e:
        raise PolyheadError(f"cannot serve the live page on {host}:{port}: {e.strerror or e}") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="polyhead-live-page", daemon=True)
    thread.start()
    shown = server.server_address[0]
    shown = f"[{shown}]" if ":" in str(shown) else shown
    url = f"http://{shown}:{server.server_address[1]}/"
    if token:
        url += "?token=" + quote(token, safe="")
    return LiveServer(server, thread, url)

