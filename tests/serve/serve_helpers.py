"""Helpers for the serving tests: a live uvicorn on loopback (in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from multi2cap.model.multi2cap import Multi2Cap
from multi2cap.model.rerank import ClapReranker
from multi2cap.serve.app import create_app
from multi2cap.serve.limits import ServeSettings
from multi2cap.webserver import ConnectionLimits, uvicorn_options


@dataclass
class LiveServer:
    url: str
    app: object
    work_dir: Path
    port: int = 0


@contextmanager
def live_server(
    model: Multi2Cap,
    settings: ServeSettings,
    work_dir: Path,
    model_id: str = "tiny",
    summary: dict | None = None,
    reranker: ClapReranker | None = None,
    limits: ConnectionLimits | None = None,
) -> Iterator[LiveServer]:
    """uvicorn serving `create_app(model)` on 127.0.0.1 (a free port) in a thread, with the
    connection limits `multi2cap serve` runs it under (`limits`, default: the CLI's)."""
    app = create_app(
        model,
        model_id=model_id,
        summary=summary or {"backbones": {}},
        settings=settings,
        work_dir=work_dir,
        reranker=reranker,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_options(limits))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, work_dir, port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
