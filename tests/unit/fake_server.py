"""A scripted HTTP server on 127.0.0.1 (random port) for tests of kfr's web clients.

A test maps a route key to a list of replies; each request for that key takes the next reply
and the last one repeats. A reply is ``(status, body, headers)``: a dict or list body is sent as
JSON, a str as is. ``route`` turns a request into a key (default: the path).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, Any, dict[str, str]]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeServer:
    route: Callable[[Request], str] = lambda r: r.path
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def script(self, key: str, *replies: Reply | Any) -> None:
        """Replies for ``key``, in order; a bare body means ``(200, body, {})``."""
        self.replies[key] = [r if isinstance(r, tuple) else (200, r, {}) for r in replies]

    def _next(self, request: Request) -> Reply:
        key = self.route(request)
        queue = self.replies.get(key)
        if not queue:
            return 404, {"error": {"message": f"no reply scripted for {key}"}}, {}
        return queue.pop(0) if len(queue) > 1 else queue[0]


def start(server_state: FakeServer) -> tuple[ThreadingHTTPServer, FakeServer]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw.decode()
            request = Request(
                method,
                parts.path,
                {k: v[0] for k, v in parse_qs(parts.query).items()},
                dict(self.headers),
                body,
            )
            server_state.requests.append(request)
            status, reply, headers = server_state._next(request)
            data = (reply if isinstance(reply, str) else json.dumps(reply)).encode()
            self.send_response(status)
            content_type = "text/html" if isinstance(reply, str) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, server_state
