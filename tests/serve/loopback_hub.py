"""A loopback HTTP server speaking the parts of the Hugging Face Hub protocol that
`HfApi.create_repo` / `HfApi.create_commit` (uploads) and `snapshot_download` /
`HfApi.list_repo_files` (downloads) use.

Uploads: `POST /api/repos/create`,
`POST /api/validate-yaml` (a README's front matter must parse as a YAML mapping),
`POST /api/models/<org>/<name>/preupload/<revision>` (it answers upload mode "regular" for every
file, so content travels base64-encoded inside the commit, no LFS/Xet transfer) and
`POST /api/models/<org>/<name>/commit/<revision>` (NDJSON: a header line, then one line per
file). Received repositories are kept in memory: `hub.repos[repo_id][path] = bytes`.

Downloads (of what `hub.repos` holds, e.g. put there by `hub.add_folder`):
`GET /api/models/<repo_id>/revision/<rev>` (the commit sha and file list),
`GET /api/models/<repo_id>/tree/<rev>[/<path>]` (the recursive file listing, one page), and
`HEAD`/`GET /<repo_id>/resolve/<rev>/<path>` with `X-Repo-Commit`, `ETag` and
`Content-Length` headers and `Range: bytes=N-` answered 206. Repository ids may be legacy
names without an organisation (`bert-base-uncased`). `hub.requests` logs (method, path).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/?]+)")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/?]+)")
_REVISION = re.compile(r"^/api/models/(.+)/revision/([^/]+)$")
_TREE = re.compile(r"^/api/models/(.+?)/tree/([^/]+)(/.*)?$")
_RESOLVE = re.compile(r"^/(.+?)/resolve/([^/]+)/(.+)$")


@dataclass
class LoopbackHub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    private: dict[str, bool] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    cards: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def add_folder(self, repo_id: str, folder: Path) -> None:
        """Serve every file under `folder` as repository `repo_id`."""
        self.repos[repo_id] = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    def commit(self, repo_id: str) -> str:
        """A stable 40-hex commit id for the repository's current content."""
        digest = hashlib.sha1()
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + b"\0" + hashlib.sha1(data).digest())
        return digest.hexdigest()


def _handler(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send_json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 404:
                self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _download(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append((self.command, path))
            if match := _REVISION.match(path):
                repo = hub.repos.get(match[1])
                if repo is None:
                    self._send_json(404, {"error": "Repository not found"})
                    return
                siblings = [{"rfilename": name} for name in sorted(repo)]
                sha = hub.commit(match[1])
                self._send_json(200, {"id": match[1], "sha": sha, "siblings": siblings})
            elif match := _TREE.match(path):
                repo = hub.repos.get(match[1])
                if repo is None:
                    self._send_json(404, {"error": "Repository not found"})
                    return
                prefix = (match[3] or "").strip("/")
                entries = [
                    {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                     "path": name}
                    for name, data in sorted(repo.items())
                    if not prefix or name.startswith(prefix + "/")
                ]  # fmt: skip
                self._send_json(200, entries)
            elif (match := _RESOLVE.match(path)) and match[1] in hub.repos:
                data = hub.repos[match[1]].get(match[3])
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged and int(ranged[1]) < len(data):
                    start = int(ranged[1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit(match[1]))
                self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data[start:])
            else:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_GET(self) -> None:
            self._download()

        def do_HEAD(self) -> None:
            self._download()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            hub.tokens.add(self.headers.get("Authorization", ""))
            if self.path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload['organization']}/{payload['name']}"
                hub.repos.setdefault(repo_id, {})
                hub.private[repo_id] = payload.get("visibility") == "private"
                self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
            elif self.path == "/api/validate-yaml":
                content = json.loads(body)["content"]
                _, front, _ = content.split("---\n", 2) if content.startswith("---\n") else "  "
                try:
                    ok = isinstance(yaml.safe_load(front), dict)
                except yaml.YAMLError:
                    ok = False
                hub.cards.append(content)
                if ok:
                    self._reply(200, {"warnings": []})
                else:
                    self._reply(400, {"errors": [{"message": "front matter is not a mapping"}]})
            elif match := _PREUPLOAD.match(self.path):
                if match[1] not in hub.repos:
                    self._reply(404, {"error": "Repository not found"})
                    return
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                         for f in files]  # fmt: skip
                self._reply(200, {"files": modes})
            elif match := _COMMIT.match(self.path):
                repo = hub.repos.setdefault(match[1], {})
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        hub.messages.append(item["value"]["summary"])
                    elif item["key"] == "file":
                        assert item["value"]["encoding"] == "base64"
                        repo[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    else:
                        self._reply(400, {"error": f"unsupported commit item {item['key']}"})
                        return
                oid = f"{len(hub.messages):040x}"
                self._reply(200, {"commitUrl": f"{hub.url}/{match[1]}/commit/{oid}",
                                  "commitOid": oid})  # fmt: skip
            else:
                self._reply(404, {"error": f"not served here: {self.path}"})

    return Handler


@contextmanager
def loopback_hub() -> Iterator[LoopbackHub]:
    hub = LoopbackHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
