"""A loopback HTTP server speaking the part of the Hugging Face Hub protocol that
`HfApi.create_repo` and `HfApi.create_commit` use: `POST /api/repos/create`,
`POST /api/validate-yaml` (a README's front matter must parse as a YAML mapping),
`POST /api/models/<org>/<name>/preupload/<revision>` (it answers upload mode "regular" for every
file, so content travels base64-encoded inside the commit, no LFS/Xet transfer) and
`POST /api/models/<org>/<name>/commit/<revision>` (NDJSON: a header line, then one line per
file). Received repositories are kept in memory: `hub.repos[repo_id][path] = bytes`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/?]+)")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/?]+)")


@dataclass
class LoopbackHub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    private: dict[str, bool] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    cards: list[str] = field(default_factory=list)


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
