"""Slow HTTP clients on raw sockets (slowloris), for the web apps' connection limits (issue 26
item 5): each connection sends a request's start, then one more header line, or one more body
byte, at every tick, and never finishes."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from typing import Literal

Kind = Literal["header", "body", "silent"]


@dataclass
class SlowClient:
    """One connection: when it was opened (and its request started) and, once the server
    closed it, how long it lived (`lived_s`) and what the server answered (`reply`)."""

    sock: socket.socket
    kind: Kind
    opened_at: float
    lived_s: float | None = None
    reply: bytes = b""


def open_slow(port: int, n: int, kind: Kind, path: str = "/") -> list[SlowClient]:
    """`n` connections to 127.0.0.1:`port` that started a request (`header`: its request line
    and one header; `body`: all headers of a multipart POST announcing 10,000 bytes, and the
    start of a file part; `silent`: nothing)."""
    clients = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        opened = time.monotonic()
        if kind == "header":
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n".encode())
        elif kind == "body":  # a multipart upload whose file part then trickles in
            head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 10000\r\n"
            head += "Content-Type: multipart/form-data; boundary=slow\r\n\r\n"
            part = 'Content-Disposition: form-data; name="file"; filename="a.wav"'
            sock.sendall(f"{head}--slow\r\n{part}\r\n\r\n".encode())
        clients.append(SlowClient(sock, kind, opened))
    return clients


def trickle_until_closed(
    clients: list[SlowClient], tick_s: float = 0.25, within_s: float = 15.0
) -> list[SlowClient]:
    """Send one header line / body byte per tick on each open connection until the server
    closes all of them or `within_s` passes; each client records how long its connection
    lived and the server's reply. A header line every 0.25 s is the review's line every 5 s,
    scaled to a 1-s limit: each line comes well within any per-read timeout, so only a
    deadline on the whole request ends it.

    A byte sent just as the server closes makes its kernel answer with a reset, which can
    discard the reply unread: a client is checked for a reply right before each byte, which
    leaves that race a window of microseconds (its reply is then empty)."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        open_ = [c for c in clients if c.lived_s is None]
        if not open_:
            break
        for client in open_:
            if _readable([client.sock], 0):
                _read(client)
            elif client.kind != "silent":
                try:
                    client.sock.sendall(b"X-Slow: 1\r\n" if client.kind == "header" else b"x")
                except OSError:
                    _read(client)
        still = [c.sock for c in open_ if c.lived_s is None]
        for sock in _readable(still, tick_s) if still else []:
            _read(next(c for c in open_ if c.sock is sock))
    for client in clients:
        client.sock.close()
    return clients


def _readable(socks: list[socket.socket], timeout_s: float) -> list[socket.socket]:
    """The sockets with something to read (or closed) within `timeout_s`: `poll`, as
    `select.select` refuses descriptors above 1023 (the review's 1,100 connections)."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN)
    ready = {fd for fd, _ in poller.poll(timeout_s * 1000)}
    return [sock for sock in socks if sock.fileno() in ready]


def _read(client: SlowClient) -> None:
    """Take what the server sent; an end of stream or a reset ends the client's life."""
    try:
        data = client.sock.recv(4096)
    except OSError:
        data = b""
    client.reply += data
    if not data:
        client.lived_s = time.monotonic() - client.opened_at


def assert_cut_off(
    clients: list[SlowClient], deadline_s: float, *expected: bytes, slack_s: float = 5.0
) -> None:
    """Every client was closed at its deadline (not before; `slack_s` after at most, for a
    loaded machine), with a reply holding `expected` unless a reset discarded it (see
    `trickle_until_closed`); at least one reply was read whole."""
    for client in clients:
        assert client.lived_s is not None, f"a {client.kind} client was never closed"
        assert deadline_s - 0.05 < client.lived_s < deadline_s + slack_s, client.lived_s
        assert not client.reply or all(e in client.reply for e in expected), client.reply[:120]
    assert any(client.reply for client in clients), "no reply was read"
