"""Slow clients against the captioning API (issue 26 item 5), on raw sockets against a live
loopback uvicorn run with the CLI's connection limits, scaled down (1-s header timeout).

Before: uvicorn closed none of 600 connections sending a header line every 5 s in 60 s, and at
a 1,024-descriptor limit 1,100 of them made every normal request fail for 45 s."""

from __future__ import annotations

import socket

import httpx
import pytest
from serve_helpers import LiveServer, live_server

from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.serve.limits import ServeSettings
from multi2cap.webserver import ConnectionLimits
from slow_clients import assert_cut_off, open_slow, trickle_until_closed

LIMITS = ConnectionLimits(
    header_timeout_s=1.0, body_timeout_s=1.5, max_connections=40, max_header_bytes=4096
)


@pytest.fixture(scope="module")
def server(model: Multi2Cap, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    settings = ServeSettings(max_batch=1, max_wait_ms=0)
    with live_server(model, settings, tmp_path_factory.mktemp("work"), limits=LIMITS) as live:
        yield live


def test_slow_headers_and_bodies_are_cut_off_and_others_still_answered(
    server: LiveServer,
) -> None:
    heads = open_slow(server.port, 20, "header", "/healthz")
    bodies = open_slow(server.port, 5, "body", "/v1/captions")
    silent = open_slow(server.port, 5, "silent")
    # all 30 are open, mid-request: a normal client is answered all the same
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    trickle_until_closed(heads + bodies + silent, tick_s=0.25, within_s=20)
    late = b"408 Request Timeout"
    assert_cut_off(heads + silent, 1.0, late, b"headers not received within 1 s")
    assert_cut_off(bodies, 1.5, late, b"body not received within 1.5 s")
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
    assert list(server.work_dir.iterdir()) == []


def test_connections_over_the_cap_are_refused_at_once(server: LiveServer) -> None:
    """40 connections open and idle: the 41st gets 503 and is closed before it sends a byte;
    the 40 are closed at their header deadline, and the server answers again."""
    idle = open_slow(server.port, 40, "silent")
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    reply = extra.recv(4096)
    assert reply.startswith(b"HTTP/1.1 503 ") and b"more than 40 open connections" in reply
    assert extra.recv(4096) == b""  # closed
    extra.close()
    assert_cut_off(trickle_until_closed(idle, within_s=20), 1.0, b"408 Request Timeout")
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200


def test_oversized_request_headers_get_431(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + b"X-Big: " + b"a" * 6000)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:80]
    assert b"request headers over 4096 bytes" in reply
    big_but_fine = {"X-Fine": "a" * 2000}
    assert httpx.get(f"{server.url}/healthz", headers=big_but_fine).status_code == 200
