"""A real HTTP server on 127.0.0.1 for the download tests, with misbehaving routes.

Each route is one path with one behaviour: serve (with or without Range support), 404,
drop the connection part-way, stall past the client's timeout, answer 503 a few times.
It binds an ephemeral loopback port only, and every wait is bounded and cut short when the
server stops, so a test can never hang on it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MAX_DELAY = 5.0  # seconds; no behaviour waits longer, whatever a test asks


@dataclass
class Route:
    """How the server answers requests for one path."""

    body: bytes = b""
    status: int = 200
    ranges: bool = True  # honour "Range: bytes=N-" with 206
    etag: str | None = '"v1"'
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 10**9  # ... on this many requests, then answer normally
    delay: float = 0.0  # pause this long (s) before the body bytes at `stall_at` ...
    stall_at: int = 0  # ... 0 means before the status line
    fail_first: int = 0  # answer 503 to this many requests first
    hits: int = 0


class IdxServer:
    """`with IdxServer() as server:` serves `server.routes` at `server.url`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) in arrival order
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def serve(self, directory: str, files: dict[str, bytes], **behaviour) -> str:
        """Serve `files` (name -> bytes) under /`directory`/ with one behaviour; return the base URL."""
        for name, body in files.items():
            self.routes[f"/{directory}/{name}"] = Route(body=body, **behaviour)
        return f"{self.url}/{directory}/"

    def ranges_requested(self, path: str) -> list[str]:
        return [headers.get("Range", "") for seen, headers in self.requests if seen == path]

    def wait(self, seconds: float) -> None:
        self._stop.wait(min(seconds, MAX_DELAY))

    def __enter__(self) -> IdxServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=MAX_DELAY)


def _handler(server: IdxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            # A proxy receives the absolute URL; serve it as if it were ours.
            path = urlsplit(self.path).path
            server.requests.append((path, dict(self.headers.items())))
            route = server.routes.get(path)
            # The client may give up (its timeout): nothing to clean then.
            with contextlib.suppress(ConnectionError, TimeoutError):
                self._answer(route)

        def _answer(self, route: Route | None) -> None:
            if route is None:
                return self._plain(404, b"not found")
            route.hits += 1
            if route.hits <= route.fail_first:
                return self._plain(503, b"try later")
            if route.status != 200:
                return self._plain(route.status, b"no")
            if route.delay and route.stall_at == 0:
                server.wait(route.delay)
            body, start = route.body, 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if match and route.ranges and (if_range is None or if_range == route.etag):
                start = int(match.group(1))
                if start >= len(body):
                    return self._plain(416, b"bad range")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            if route.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if route.etag:
                self.send_header("ETag", route.etag)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            end = len(body)
            dropping = route.drop_after is not None and route.hits - route.fail_first <= route.drops
            if dropping:
                end = min(end, start + route.drop_after)
            if route.delay and route.stall_at:
                self.wfile.write(body[start : start + route.stall_at])
                self.wfile.flush()
                server.wait(route.delay)
                start += route.stall_at
            self.wfile.write(body[start:end])
            self.wfile.flush()
            if dropping:
                self.close_connection = True

        def _plain(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

    return Handler
