"""Links reach the server that serves the study: `human serve --port` rewrites the links of a
study made without `--base-url` for its own address, and refuses to start when a study's links
were made for another loopback port (they reached the wrong server and its 403 before)."""

from __future__ import annotations

import csv
import http.client
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _links(study: Path) -> dict[str, str]:
    with open(study / "links.csv", newline="") as handle:
        return {row["rater"]: row["link"] for row in csv.DictReader(handle)}


def _open(link: str) -> http.client.HTTPResponse:
    parts = urlsplit(link)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", parts.path)
    return conn.getresponse()


def test_two_studies_on_two_ports_each_get_links_to_their_own_server(
    make_study, live_server
) -> None:
    """docs/human.md's example: a MOS study and a captions study served side by side."""
    first = make_study("mos", n=2, raters=["ann"])
    second = make_study("captions", n=2, raters=["ben"])
    servers = [live_server(first.path), live_server(second.path)]
    for study, server in zip((first, second), servers, strict=True):
        links = _links(study.path)
        assert links["ben" if study is second else "ann"].startswith(f"{server.base}/r/")
        reply = _open(next(iter(links.values())))
        assert reply.status == 303 and reply.getheader("location") == "/rate"
        admin = (study.path / "admin_link.txt").read_text().strip()
        assert admin.startswith(f"{server.base}/a/") and _open(admin).status == 303
        # The tokens are the ones made at creation: only the address changed.
        assert {link.rsplit("/", 1)[1] for link in links.values()} == {
            link.rsplit("/", 1)[1] for link in study.links.values()
        }


def test_links_made_for_another_port_refuse_to_start(make_study) -> None:
    port_a = free_port()
    study = make_study("mos", n=2, raters=["ann"], base_url=f"http://127.0.0.1:{port_a}")
    port_b = free_port()
    command = [sys.executable, "-m", "multi2cap.cli.main", "human", "serve", str(study.path)]
    done = subprocess.run(
        [*command, "--port", str(port_b)], capture_output=True, text=True, timeout=120
    )
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, message
    assert f"start with http://127.0.0.1:{port_a}" in message
    assert f"Serve it with --port {port_a}" in message
    assert f"--base-url http://127.0.0.1:{port_b}" in message
    assert _links(study.path)["ann"].startswith(f"http://127.0.0.1:{port_a}/r/")  # untouched


def test_serve_base_url_rewrites_links_and_foreign_links_are_refused(make_study) -> None:
    from multi2cap.human.server import prepare_links

    study = make_study("mos", n=2, raters=["ann", "bob"])
    tokens = {name: link.rsplit("/", 1)[1] for name, link in study.links.items()}
    public, rewritten = prepare_links(study.path, "127.0.0.1", 8090, "https://study.example.org/")
    assert (public, rewritten) == ("https://study.example.org", True)
    assert _links(study.path) == {n: f"https://study.example.org/r/{t}" for n, t in tokens.items()}
    assert (study.path / "admin_link.txt").read_text().startswith("https://study.example.org/a/")
    # A links.csv copied from another study is not rewritten into this one's.
    other = make_study("mos", n=2, raters=["ann", "bob"])
    shutil.copyfile(other.path / "links.csv", study.path / "links.csv")
    with pytest.raises(ValueError, match="the link of rater 'ann' is not one of this study's"):
        prepare_links(study.path, "127.0.0.1", 8090)
    (study.path / "links.csv").unlink()
    assert prepare_links(study.path, "127.0.0.1", 8090) == ("http://127.0.0.1:8090", None)


def test_served_base_url_rules() -> None:
    from multi2cap.human.links import served_base_url

    assert served_base_url(None, "127.0.0.1", 8081) == ("http://127.0.0.1:8081", True)
    assert served_base_url(None, "::1", 8081) == ("http://[::1]:8081", True)
    with pytest.raises(ValueError, match="pass --base-url"):
        served_base_url(None, "0.0.0.0", 8081)
    # A proxy's public address is kept whatever the port behind it.
    assert served_base_url("https://study.example.org", "127.0.0.1", 8081) == (
        "https://study.example.org",
        False,
    )
    assert served_base_url("http://localhost:8081", "127.0.0.1", 8081) == (
        "http://localhost:8081",
        False,
    )
    with pytest.raises(ValueError, match="--port 8080"):
        served_base_url("http://127.0.0.1:8080", "127.0.0.1", 8081)
    with pytest.raises(ValueError, match="must be an http"):
        served_base_url(None, "127.0.0.1", 8081, "study.example.org")
