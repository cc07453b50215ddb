"""A fake HTTP API for a provider's contract tests: a threaded server on 127.0.0.1 with an in-memory store, a lock
around every request, and fault injection (``fail_next``: 5xx or 429 with headers such as Retry-After;
``slow_next``: an answer after a client's timeout). A subclass implements ``route`` (the documented API: field
names, envelopes, paging, errors, idempotent replays as the provider's reference and SDK give them, each cited)
and ``error_body`` (the provider's error envelope). tests/fakes/ holds the GoCardless and Stripe ones.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeAPI", "Json", "Request", "Response", "json_response"]

Response = tuple[int, dict[str, str], bytes]
Json = dict[str, Any]  # a resource, its parameters or a body: a JSON object, in the shape the API reference gives


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Message[str, str]  # the handler's own: names are case-insensitive, as in HTTP
    body: bytes

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)


@dataclass
class _Fault:
    status: int | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


class FakeAPI:
    """Subclasses implement ``route`` (the documented API) and ``error_body`` (its error envelope)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self._faults: deque[_Fault] = deque()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str), host  # bound to an IPv4 address by name in __init__
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()

    def fail_next(self, status: int, times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and headers) without acting on them."""
        with self.lock:
            self._faults.extend(_Fault(status=status, headers=dict(headers or {})) for _ in range(times))

    def slow_next(self, seconds: float, times: int = 1) -> None:
        """Act on the next ``times`` requests but answer only after ``seconds`` (a client timeout)."""
        with self.lock:
            self._faults.extend(_Fault(delay=seconds) for _ in range(times))

    def route(self, request: Request) -> Response:
        raise NotImplementedError

    def error_body(self, status: int) -> object:
        raise NotImplementedError

    def _serve(self, request: Request) -> tuple[Response, float]:
        with self.lock:
            self.requests.append((request.method, request.path))
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.status is not None:
            return json_response(fault.status, self.error_body(fault.status), fault.headers), 0.0
        with self.lock:
            response = self.route(request)
        return response, fault.delay if fault else 0.0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Silent: pytest shows failures."""

            def _any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the client died mid-body: a real server acts on no cut-off request
                    self.close_connection = True
                    return
                request = Request(
                    self.command,
                    parts.path,
                    parse_qsl(parts.query, keep_blank_values=True),
                    self.headers,
                    body,
                )
                (status, headers, payload), delay = api._serve(request)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left, as intended

            do_GET = do_POST = do_PUT = do_DELETE = _any

        return Handler
