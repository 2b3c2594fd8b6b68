"""A loopback OpenAI-compatible server for the tests: real HTTP on 127.0.0.1, spoken to by the
real `openai` SDK.

It answers `/v1/chat/completions` deterministically from the request (stage 1 echoes the category,
stage 2 extends the stage-1 caption), checks every request (auth header, one text part with the
right prompt, one image part of the right type), records them, and injects faults from a queue:
"429" (with Retry-After), "429-soon" (Retry-After: soon), "500", "timeout" (answers after
`timeout_sleep_s`), "empty", "refusal", "malformed" (invalid JSON body), "leak" (a caption
mentioning the spectrogram), odd shapes of valid JSON ("content-parts": a list of text parts,
"content-int", "message-str", "choices-object"), "usage-negative" (prompt_tokens -1,000,000), and
in a batch "garbage-line" (the answer replaced by a line without custom_id and a non-JSON line).

Hostile endpoints (issue 26): "trickle" sends the whole answer (status line and headers
included) one byte every `trickle_s`; "trickle-body" sends the headers at once and the body one
byte every `trickle_s`; "trickle-forever" sends the headers, then a body (chunked) of one
space every `trickle_s` until the client hangs up; "huge" is a valid answer of `huge_bytes` with its
Content-Length (junk that post-processing rejects), "huge-chunked" the same without a length (chunked, so only counting the bytes
read stops it), "endless" a chunked body that never ends, "gzip" a gzip-compressed answer sent
although the client asked for none; "loop" is a reply that loops ("la la la ...") until the
token cap (`finish_reason: length`).
`state.answer` replaces how a chat request is answered (default `answer_chat`, the VggCaps
stages); the transport faults above (429, 500, timeout, malformed, the hostile ones) stay the
server's, so another client (the CLAIR-A judge, `tests/metrics/judge_loopback.py`) meets the same
endpoint.
It also implements the Batch API surface (`/v1/files`, `/v1/files/{id}/content`, `/v1/batches`,
`/v1/batches/{id}`).

To kill a client at a known point, `kill_at` = N SIGKILLs `kill_pid` when the N-th chat request
arrives (before answering it); `hold_at` = N keeps the N-th request (and every later one) waiting
until `release` is set, so a test can wait for the client's files to settle and kill it between
two appends.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOSTILE = frozenset(
    {"trickle", "trickle-body", "trickle-forever", "huge", "huge-chunked", "endless", "gzip"}
)
STAGE1_START = "The image is an audio spectrum, categorized into "
STAGE2_START = "Revise the caption below"


@dataclass
class ServerState:
    api_key: str
    faults: deque[str] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    delay_s: float = 0.0
    timeout_sleep_s: float = 1.5
    trickle_s: float = 0.1
    huge_bytes: int = 3_000_000
    stopped: threading.Event = field(default_factory=threading.Event)
    bytes_sent: int = 0
    record: bool = True
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_polls_before_done: int = 1
    chat_seen: int = 0
    kill_at: int | None = None
    kill_pid: int | None = None
    hold_at: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: Callable[[ServerState, dict[str, Any], str | None], tuple[int, Any]] | None = None

    def arrive(self) -> int:
        """Count one chat request; returns its number (from 1)."""
        with self.lock:
            self.chat_seen += 1
            return self.chat_seen

    def next_fault(self) -> str | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def reply(self, body: dict[str, Any], fault: str | None) -> tuple[int, Any]:
        """(status, JSON body) for one chat request, by `answer` (default `answer_chat`)."""
        return (self.answer or answer_chat)(self, body, fault)


def stage1_reply(category: str) -> str:
    subject = category.split(",")[0]
    return f"A steady {subject} sound with rhythmic pulses over a warm, low hum in the background."


def stage2_reply(raw_caption: str) -> str:
    return f"{raw_caption.rstrip('.')}, echoing across a sunlit courtyard where people gather."


def answer_chat(state: ServerState, body: dict[str, Any], fault: str | None) -> tuple[int, Any]:
    """(status, JSON body) for one chat request; checks the request shape into state.problems."""
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages else None
    if not isinstance(content, list) or len(content) != 2:
        state.problems.append(f"expected [text, image] content, got {content!r:.200}")
        return 400, {"error": {"message": "bad content"}}
    text, image = content
    prompt = text.get("text", "") if text.get("type") == "text" else ""
    url = image.get("image_url", {}).get("url", "") if image.get("type") == "image_url" else ""
    if prompt.startswith(STAGE1_START):
        stage, mime = 1, "data:image/png;base64,"
        category = prompt[len(STAGE1_START) :].split(" category.")[0]
        reply = stage1_reply(category)
        if "[Rules]" not in prompt or "Focus solely on auditory elements." not in prompt:
            state.problems.append("stage 1 prompt lacks Listing 1's rules")
    elif prompt.startswith(STAGE2_START):
        stage, mime = 2, "data:image/jpeg;base64,"
        paragraphs = prompt.split("\n\n")
        reply = stage2_reply(paragraphs[1].strip())
        if "[example]" not in prompt or "A quiet forest" not in prompt:
            state.problems.append("stage 2 prompt lacks Listing 2's examples")
    else:
        state.problems.append(f"unknown prompt {prompt[:60]!r}")
        return 400, {"error": {"message": "unknown prompt"}}
    if not url.startswith(mime):
        state.problems.append(f"stage {stage} image is not {mime[5:15]}: {url[:30]!r}")
    else:
        raw = base64.b64decode(url[len(mime) :])
        magic = b"\x89PNG" if stage == 1 else b"\xff\xd8"
        if not raw.startswith(magic):
            state.problems.append(f"stage {stage} image bytes are not {mime[5:15]}")
    if state.record:
        with state.lock:
            state.requests.append({"stage": stage, "prompt": prompt, "body_keys": sorted(body)})
    message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
    if fault == "empty":
        message["content"] = ""
    elif fault == "refusal":
        message["content"] = None
        message["refusal"] = "I'm sorry, I can't help with that."
    elif fault == "leak":
        message["content"] = "The spectrogram shows a steady hum with bright bands."
    elif fault == "content-parts":
        half = len(reply) // 2
        message["content"] = [
            {"type": "text", "text": reply[:half]},
            {"type": "text", "text": reply[half:]},
        ]
    elif fault == "content-int":
        message["content"] = 42
    elif fault == "loop":
        message["content"] = "A dog barks in the yard. " + "la " * 290
    elif fault in ("huge", "huge-chunked"):  # junk a post-processing check rejects (a leak)
        message["content"] = "The spectrogram shows a hum." + " la" * (state.huge_bytes // 3)
    usage = {"prompt_tokens": 100 + stage, "completion_tokens": 20 + stage, "total_tokens": 122}
    if fault == "usage-negative":
        usage = {"prompt_tokens": -1_000_000, "completion_tokens": 20, "total_tokens": -999_980}
    finish = "length" if fault == "loop" else "stop"
    if fault == "loop":
        usage["completion_tokens"] = 300
    choices: Any = [{"index": 0, "message": message, "finish_reason": finish}]
    if fault == "message-str":
        choices[0]["message"] = reply
    elif fault == "choices-object":
        choices = {"0": choices[0]}
    return 200, {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "?"),
        "choices": choices,
        "usage": usage,
    }


class _Handler(BaseHTTPRequestHandler):
    state: ServerState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _raw(self, data: bytes, pause_s: float = 0.0) -> bool:
        """Write bytes as they are (one at a time with `pause_s` between); False once the client
        is gone or the server stops."""
        pieces = [data[i : i + 1] for i in range(len(data))] if pause_s else [data]
        for piece in pieces:
            if self.state.stopped.is_set():
                return False
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return False
            with self.state.lock:
                self.state.bytes_sent += len(piece)
            if pause_s:
                time.sleep(pause_s)
        return True

    def _hostile(self, fault: str, body: dict[str, Any]) -> None:
        """The hostile answers (see the module docstring); the connection closes after each."""
        self.close_connection = True
        pause = self.state.trickle_s
        payload = json.dumps(self.state.reply(body, fault)[1]).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        if fault == "trickle":
            self._raw(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload, pause)
        elif fault == "trickle-body":
            self._raw(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode())
            self._raw(payload, pause)
        elif fault == "trickle-forever":  # chunked: no length to refuse it by
            if self._raw(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()):
                while self._raw(b"1\r\n \r\n") and not self.state.stopped.wait(pause):
                    pass
        elif fault == "huge":
            self._raw(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        elif fault in ("huge-chunked", "endless"):
            self._raw(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            if fault == "huge-chunked":
                for start in range(0, len(payload), 65536):
                    piece = payload[start : start + 65536]
                    if not self._raw(b"%x\r\n%s\r\n" % (len(piece), piece)):
                        return
                self._raw(b"0\r\n\r\n")
            else:
                filler = b" " * 65536
                while self._raw(b"%x\r\n%s\r\n" % (len(filler), filler)):
                    pass
        elif fault == "gzip":
            packed = gzip.compress(payload)
            self._raw(
                f"{head}Content-Encoding: gzip\r\nContent-Length: {len(packed)}\r\n\r\n".encode()
                + packed
            )

    def _authorised(self) -> bool:
        with self.state.lock:
            self.state.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("Authorization") != f"Bearer {self.state.api_key}":
            self._send(401, {"error": {"message": "bad key"}})
            return False
        return True

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        raw = self._body()
        if not self._authorised():
            return
        if self.path.endswith("/chat/completions"):
            self._chat(json.loads(raw))
        elif self.path.endswith("/files"):
            self._upload(raw)
        elif self.path.endswith("/batches"):
            self._create_batch(json.loads(raw))
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self) -> None:
        if not self._authorised():
            return
        match = re.search(r"/files/([^/]+)/content$", self.path)
        if match and match.group(1) in self.state.files:
            self._send(200, self.state.files[match.group(1)])
            return
        match = re.search(r"/batches/([^/]+)$", self.path)
        if match and match.group(1) in self.state.batches:
            self._send(200, self._poll_batch(match.group(1)))
            return
        self._send(404, {"error": {"message": f"no route {self.path}"}})

    def _chat(self, body: dict[str, Any]) -> None:
        number = self.state.arrive()
        state = self.state
        if state.kill_at is not None and number >= state.kill_at:
            while state.kill_pid is None:  # the test sets it right after starting the client
                time.sleep(0.01)
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.kill_pid, signal.SIGKILL)
            return  # never answered: the client is gone
        if state.hold_at is not None and number >= state.hold_at:
            state.release.wait()
        fault = self.state.next_fault()
        if self.state.delay_s:
            time.sleep(self.state.delay_s)
        if fault == "429":
            self._send(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "20"})
        elif fault == "429-soon":
            self._send(429, {"error": {"message": "slow down"}}, {"retry-after": "soon"})
        elif fault == "500":
            self._send(500, {"error": {"message": "boom"}})
        elif fault == "timeout":
            time.sleep(self.state.timeout_sleep_s)
            self._send(200, self.state.reply(body, None)[1])
        elif fault == "malformed":
            self._send(200, b'{"id": "chatcmpl-x", "choices": [')
        elif fault in HOSTILE:
            self._hostile(fault, body)
        else:
            status, payload = self.state.reply(body, fault)
            self._send(status, payload)

    def _upload(self, raw: bytes) -> None:
        boundary = self.headers.get_content_type() == "multipart/form-data" and re.search(
            r"boundary=([^;]+)", self.headers["Content-Type"]
        )
        if not boundary:
            self._send(400, {"error": {"message": "expected multipart"}})
            return
        content = b""
        for part in raw.split(b"--" + boundary.group(1).strip('"').encode()):
            head, _, data = part.partition(b"\r\n\r\n")
            if b'name="file"' in head:
                content = data[:-2] if data.endswith(b"\r\n") else data
        with self.state.lock:
            file_id = f"file-{len(self.state.files)}"
            self.state.files[file_id] = content
        self._send(
            200,
            {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": 0,
                "filename": "input.jsonl",
                "purpose": "batch",
                "status": "processed",
            },
        )

    def _create_batch(self, body: dict[str, Any]) -> None:
        lines = self.state.files[body["input_file_id"]].decode().splitlines()
        outputs: list[Any] = []
        errors = []
        for line in lines:
            request = json.loads(line)
            fault = self.state.next_fault()
            if fault == "500":
                errors.append(
                    {
                        "id": "r",
                        "custom_id": request["custom_id"],
                        "response": None,
                        "error": {"code": "server_error", "message": "boom"},
                    }
                )
                continue
            if fault == "garbage-line":
                outputs.append({"id": "r", "error": None, "response": {"status_code": 200}})
                outputs.append("}{ not json")
                continue
            status, payload = self.state.reply(request["body"], fault)
            outputs.append(
                {
                    "id": "r",
                    "custom_id": request["custom_id"],
                    "error": None,
                    "response": {"status_code": status, "request_id": "q", "body": payload},
                }
            )
        with self.state.lock:
            out_id = f"file-{len(self.state.files)}"
            self.state.files[out_id] = "".join(
                (o if isinstance(o, str) else json.dumps(o)) + "\n" for o in reversed(outputs)
            ).encode()
            err_id = f"file-{len(self.state.files)}"
            self.state.files[err_id] = "".join(json.dumps(e) + "\n" for e in errors).encode()
            batch_id = f"batch-{len(self.state.batches)}"
            self.state.batches[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": "24h",
                "status": "validating",
                "created_at": 0,
                "polls": 0,
                "final": {
                    "output_file_id": out_id,
                    "error_file_id": err_id if errors else None,
                    "request_counts": {
                        "total": len(lines),
                        "completed": len(outputs),
                        "failed": len(errors),
                    },
                },
            }
        self._send(200, self._public(batch_id))

    def _poll_batch(self, batch_id: str) -> dict[str, Any]:
        with self.state.lock:
            batch = self.state.batches[batch_id]
            batch["polls"] += 1
            if batch["polls"] > self.state.batch_polls_before_done:
                batch["status"] = "completed"
                batch.update(batch["final"])
            else:
                batch["status"] = "in_progress"
        return self._public(batch_id)

    def _public(self, batch_id: str) -> dict[str, Any]:
        batch = self.state.batches[batch_id]
        return {k: v for k, v in batch.items() if k not in ("polls", "final")}


class LoopbackServer:
    """Context manager: `with LoopbackServer(api_key) as server: server.base_url ...`."""

    def __init__(self, api_key: str = "sk-loopback-test") -> None:
        self.state = ServerState(api_key=api_key)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stopped.set()
        self.state.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
