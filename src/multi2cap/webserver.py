"""How both web apps (`multi2cap serve`, `multi2cap human serve`) run under uvicorn: the
connection limits that uvicorn itself does not have.

uvicorn bounds the idle time between two requests of a connection (`timeout_keep_alive`), but
nothing else about a client: a connection that sends nothing, or one header line every 5 s, or a
body one byte at a time, is held forever (the review held 600 such connections open for 60 s,
and 1,100 of them exhausted a 1,024-descriptor limit, so that every normal request failed).
uvicorn's `limit_concurrency` does not help: it answers 503 to *complete* requests once too many
connections are open, so slow clients lock normal ones out.

`ConnectionLimits` adds, per connection, through a subclass of uvicorn's httptools protocol
(`httptools` is a dependency, and uvicorn's default parser when installed):

- `header_timeout_s`: from the connection's start (or a kept-alive request's first byte) to the
  end of the request's headers; then the connection gets 408 and is closed. This is what closes
  a slowloris connection: no amount of trickling extends it;
- `body_timeout_s`: from the end of the headers to the end of the body (408, closed; the app sees
  the client leave, and a staged upload is removed as after any disconnect);
- `max_header_bytes`: the request line and headers together (431, closed);
- `max_connections`: open connections; one over it gets 503 at once and is closed, so the
  process keeps file descriptors for the requests it serves.

What these cannot do (a reverse proxy's job in a public deployment: docs/serve.md and
docs/human.md): limit connections per client address, buffer slow uploads so the app sees a
fast local client, TLS, and a client that reads the *response* slowly (the response waits in the
kernel's and the transport's buffers, bounded by what the app sends).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class ConnectionLimits(BaseModel):
    """Per-connection limits of the web apps (see the module docstring for what each closes)."""

    model_config = ConfigDict(extra="forbid")

    header_timeout_s: float = Field(10.0, gt=0, description="connection start -> end of headers")
    body_timeout_s: float = Field(120.0, gt=0, description="end of headers -> end of body")
    max_header_bytes: int = Field(65_536, ge=1024, description="request line and headers")
    max_connections: int = Field(256, ge=1, description="open connections at once")
    keep_alive_s: float = Field(5.0, gt=0, description="idle time between two requests")


Phase = Literal["head", "body", "done"]


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with `limits` enforced (pass it as uvicorn's `http=`)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _phase: Phase = "head"
        _head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._refuse(503, f"more than {limits.max_connections} open connections")
                return
            self._arm(limits.header_timeout_s)  # a connection that never sends is closed too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._phase != "body":  # bytes before the end of a request's headers
                self._head_bytes += len(data)
            super().data_received(data)
            if self._phase != "body" and self._head_bytes > limits.max_header_bytes:
                self._refuse(431, f"request headers over {limits.max_header_bytes} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._phase = "head"
            if self._timer is None:  # a new request on a kept-alive connection
                self._arm(limits.header_timeout_s)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._phase, self._head_bytes = "body", 0
            self._arm(limits.body_timeout_s)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._phase = "done"
            self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._phase == "body":  # a pipelined request whose reading was paused till now
                self._arm(limits.body_timeout_s)

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if self._phase == "head":
                self._refuse(
                    408, f"request headers not received within {limits.header_timeout_s:g} s"
                )
            elif self._phase == "body":
                self._refuse(408, f"request body not received within {limits.body_timeout_s:g} s")

        def _refuse(self, status: int, reason: str) -> None:
            """Answer `status` unless a response has started, then close the connection."""
            self._disarm()
            if self.transport.is_closing():
                return
            # uvicorn's own logger: shown at `serve`'s log level (info), not `human serve`'s
            self.logger.info("closing a connection from %s: %s", _address(self.client), reason)
            started = self.cycle is not None and self.cycle.response_started
            if not started:
                body = f"{reason}\n".encode()
                head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
                head += b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
                head += b"content-length: %d\r\n\r\n" % len(body)
                self.transport.write(head + body)
            self.transport.close()

    return GuardedHttpToolsProtocol


def _address(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def uvicorn_options(limits: ConnectionLimits | None = None) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` / `uvicorn.Config` that enforce `limits`."""
    limits = limits or ConnectionLimits()
    return {
        "http": guarded_protocol(limits),
        "timeout_keep_alive": limits.keep_alive_s,
    }
