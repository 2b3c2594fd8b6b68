"""Slow clients against the raters' app (issue 26 item 5): `multi2cap human serve` in its own
process with the connection limits scaled down (1-s header timeout), raw sockets on loopback.
Before: no connection sending a header line every 5 s was ever closed, and at a 1,024
descriptor limit 1,100 of them locked every rater out."""

from __future__ import annotations

import socket

import httpx

from slow_clients import assert_cut_off, open_slow, trickle_until_closed

LATE = b"408 Request Timeout"


def test_slow_clients_are_cut_off_and_raters_still_served(make_study, live_server) -> None:
    study = make_study("mos")
    server = live_server(
        study.path, "--header-timeout-s", "1", "--body-timeout-s", "1.5", "--max-connections", "30"
    )
    heads = open_slow(server.port, 20, "header", "/")
    bodies = open_slow(server.port, 3, "body", "/api/answer")
    assert httpx.get(f"{server.base}/", timeout=30).status_code == 200  # 23 slow ones open
    trickle_until_closed(heads + bodies, within_s=20)
    assert_cut_off(heads, 1.0, LATE, b"request headers not received within 1 s")
    assert_cut_off(bodies, 1.5, LATE, b"request body not received within 1.5 s")

    idle = open_slow(server.port, 30, "silent")  # the cap: one more is refused at once
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as extra:
        reply = extra.recv(4096)
    assert reply.startswith(b"HTTP/1.1 503 ") and b"more than 30 open connections" in reply
    assert_cut_off(trickle_until_closed(idle, within_s=20), 1.0, LATE)
    assert httpx.get(f"{server.base}/", timeout=30).status_code == 200
