"""Loopback HTTP file servers speaking the download layouts of the metric assets: Maven Central
(`<base>/<group path>/<artifact>/<version>/<file>` plus a `.sha1` beside each file) and GitHub
releases (`/<owner>/<repo>/releases/download/<tag>/<file>`, answered 302 to another path, as
github.com redirects to its asset host). They honour `Range: bytes=N-` (206, or 416 past the end)
and can misbehave on purpose: drop the connection after N bytes, answer 503 a few times, or
ignore Range. The Hugging Face side is `tests/serve/loopback_hub.py`.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

MAVEN_DIR = "/maven2/edu/stanford/nlp/stanford-corenlp/3.6.0"
FENSE_DIR = "/blmoistawinde/fense/releases/download/V0.1"


@dataclass
class StaticServer:
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # once per path
    fail_times: dict[str, int] = field(default_factory=dict)  # 503 answers before serving
    honour_range: bool = True
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def add_maven(self, name: str, data: bytes, sha1: str | None = None) -> None:
        """Serve `data` as `<MAVEN_DIR>/<name>` with its `.sha1` (or the given digest)."""
        self.files[f"{MAVEN_DIR}/{name}"] = data
        digest = sha1 or hashlib.sha1(data).hexdigest()
        self.files[f"{MAVEN_DIR}/{name}.sha1"] = digest.encode()

    def add_release(self, name: str, data: bytes) -> None:
        """Serve `data` as a GitHub release asset, through a 302 to the asset host's path."""
        self.redirects[f"{FENSE_DIR}/{name}"] = f"/release-assets/{name}?sig=loopback"
        self.files[f"/release-assets/{name}"] = data

    def ranges(self, path: str) -> list[str | None]:
        """The Range headers of the GET requests for `path`, in order."""
        return [r for method, p, r in self.requests if method == "GET" and p == path]


def _handler(server: StaticServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _empty(self, status: int, **headers: str) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            server.requests.append(("GET", path, self.headers.get("Range")))
            if path in server.redirects:
                self._empty(302, Location=server.redirects[path])
                return
            if server.fail_times.get(path, 0) > 0:
                server.fail_times[path] -= 1
                self._empty(503)
                return
            data = server.files.get(path)
            if data is None:
                self._empty(404)
                return
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if ranged and server.honour_range:
                start = int(ranged[1])
                if start >= len(data):
                    self._empty(416, Content_Range=f"bytes */{len(data)}")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            cut = server.drop_after.pop(path, None)
            if cut is None:
                self.wfile.write(data[start:])
                return
            self.wfile.write(data[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@contextmanager
def static_server() -> Iterator[StaticServer]:
    state = StaticServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def fake_jar(name: str, size: int, seed: int = 0) -> bytes:
    """A valid (class-less) jar: a manifest and `size` incompressible bytes, so that `java -cp`
    accepts it and a transfer can be cut in the middle."""
    blob = random.Random(seed).randbytes(size)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nName: {name}\n\n")
        jar.writestr("data.bin", blob)
    return buffer.getvalue()
