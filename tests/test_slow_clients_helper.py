"""The slow-client helper (`tests/slow_clients.py`) replays the review's 1,100 connections
(`benchmarks/bench_serve_attacks.py --slow 1100`): it must watch descriptors above 1023, which
`select.select` refuses ("filedescriptor out of range in select()")."""

from __future__ import annotations

import fcntl
import resource
import socket

import pytest

from slow_clients import _readable

HIGH_FD = 2048  # room for the descriptors the process already holds


def test_a_socket_above_descriptor_1023_is_watched() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH_FD:
        pytest.skip(f"the hard descriptor limit ({hard}) does not reach {HIGH_FD}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, HIGH_FD), hard))
    ours, theirs = socket.socketpair()
    # the lowest free descriptor from 1024 up: nothing the process holds is replaced
    high = socket.socket(fileno=fcntl.fcntl(ours.fileno(), fcntl.F_DUPFD, 1024))
    try:
        assert high.fileno() >= 1024
        assert _readable([high], 0) == []
        theirs.sendall(b"x")
        assert _readable([high], 1.0) == [high]
    finally:
        for sock in (high, ours, theirs):
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
