"""Hostile and careless requests to the local API (issue 14, items 2-5): each is a clear 4xx, never a 500, and
nothing is read, made or leaked on the way."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests_support import bearer

from agent.api.app import ApiServer, serve_api
from agent.api.guard import MAX_BODY
from agent.home.demo import init_home
from agent.runtime import Runtime

MATTER = "M-2026-0010"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Runtime, ApiServer, httpx.Client]]:
    home = tmp_path / "home"
    init_home(home)
    rt = Runtime.for_home(home)
    rt.syncer.sync()
    server = serve_api(rt, "127.0.0.1", 0)
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {bearer(rt.store)}"},
                          timeout=10)
    try:
        yield rt, server, client
    finally:
        client.close()
        server.stop()
        rt.close()


def _raw(server: ApiServer, request: bytes, then: bytes = b"") -> tuple[int, float]:
    """Send ``request`` (headers) and maybe the start of a body; the status line and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request + then)
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(status.split()[1]), time.monotonic() - started


def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(served: tuple[Runtime, ApiServer, httpx.Client]
                                                                   ) -> None:
    _rt, server, _client = served
    head = (b"POST /links HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 314572800\r\n\r\n")  # 300 MB announced, 10 bytes sent: an answer must not wait
    status, took = _raw(server, head, b'{"matter":')
    assert status == 401 and took < 5


def test_a_body_over_the_cap_is_413_even_with_the_token(served: tuple[Runtime, ApiServer, httpx.Client]) -> None:
    _rt, _server, client = served
    big = b'{"matter": "' + b"x" * (MAX_BODY + 10) + b'"}'
    answer = client.post("/links", content=big, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]


def test_a_foreign_host_header_gets_no_answer(served: tuple[Runtime, ApiServer, httpx.Client]) -> None:
    _rt, server, client = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/health", headers={"Host": "attacker.example"})
    response = conn.getresponse()
    assert response.status == 421 and b"unknown host" in response.read()
    conn.close()
    assert client.get("/health").status_code == 200  # 127.0.0.1 itself is fine
    assert httpx.get(f"http://localhost:{server.port}/health").status_code == 200


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/links", {"matter": MATTER, "account": "nope"}, "account"),
    ("POST", "/links", {"matter": MATTER, "amount": "1" * 29}, "amount"),
    ("POST", "/links/quick", {"name": "A", "email": "a@example.com\r\nBcc: x@evil.example", "amount": "10.00"},
     "email"),
    ("POST", "/links/quick", {"name": "A", "email": "not-an-address", "amount": "10.00"}, "email"),
    ("GET", "/postings/99999999999999999999", None, "posting_id"),
    ("POST", "/bulk/review?filename=..", None, "filename"),
])
def test_a_persons_mistake_is_a_4xx_naming_the_field(served: tuple[Runtime, ApiServer, httpx.Client], method: str,
                                                     path: str, body: object, field: str) -> None:
    rt, _server, client = served
    answer = client.request(method, path, json=body) if body is not None else client.request(method, path,
                                                                                            content=b"a,b\n")
    assert 400 <= answer.status_code < 500, answer.text
    assert field in answer.json()["error"]
    assert rt.links.find() == []  # nothing was made on the way


def test_docs_page_loads_nothing_from_elsewhere(served: tuple[Runtime, ApiServer, httpx.Client]) -> None:
    _rt, _server, client = served
    page = client.get("/docs")
    assert page.status_code == 200 and "/links" in page.text
    assert "<script" not in page.text and "http://" not in page.text.replace("http://127.0.0.1", "")
    assert "https://" not in page.text
