"""The HTTP side of the chat client: the endpoint URL check, and a cap on the bytes read.

`check_base_url` refuses a `--base-url` that is no http(s) URL with a host when the settings are
made, before anything is paid for (in the VggCaps builder it used to surface as 8 refused
connections).

The SDK reads a reply whole before it returns, with no size limit, so an endpoint sending 20 MB
(or a body that never ends) held 1.2 GB of memory in one build and fed post-processing a 20-MB
"caption". `capped_http_client(max_bytes)` is the SDK's own default async client
(`openai.DefaultAsyncHttpxClient`: its timeouts, connection limits and redirects) with two event
hooks:

- on the request: `Accept-Encoding: identity`, so the bytes counted are the bytes kept (a 1-MB
  gzip body may inflate to 1 GB after the count);
- on the response, before its body is read: a compressed reply (the server ignored the header), or
  a `Content-Length` over the cap, raises `ReplyTooLarge` at once; otherwise the body stream is
  wrapped so that reading stops with `ReplyTooLarge` the moment it passes the cap. This also
  bounds error bodies (4xx/5xx), which the SDK reads whole too.

`ReplyTooLarge` is not an `httpx` error, so the SDK passes it through unwrapped.

How long a request may take is bounded elsewhere, by `asyncio.timeout` around the whole call in
`multi2cap.llm_client.chat.ChatClient.post`: httpx's timeouts bound each phase and each read on
its own, so a reply trickling one byte a second never trips them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

try:  # the SDK's HTTP library: `httpx2` in openai 3.x, `httpx` before
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx  # type: ignore[no-redef]

DEFAULT_MAX_REPLY_BYTES = 1_000_000  # a 300-token chat reply is about 1-2 kB of JSON


class ReplyTooLarge(Exception):
    """The endpoint sent more than the reply limit (or a compressed reply); `reason` is safe to
    log (it holds no reply text)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _CappedStream(httpx.AsyncByteStream):
    """A response body that raises `ReplyTooLarge` once more than `limit` bytes arrived."""

    def __init__(self, inner: Any, limit: int) -> None:
        self._inner, self._limit = inner, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise ReplyTooLarge(f"reply over the {self._limit:,}-byte limit; stopped reading")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def check_base_url(url: str) -> None:
    """Raise `ValueError` unless `url` is an absolute http(s) URL with a host (the endpoint's
    root, e.g. `http://localhost:8000/v1`), without user info that could hold a secret."""
    from urllib.parse import urlsplit

    shown = repr(url) if "@" not in url else "(not shown: it holds user info)"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError as err:
        raise ValueError(f"--base-url / base_url {shown} is not a URL ({err})") from None
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = (
            f"the scheme must be http or https, found {parts.scheme!r}"
            if parts.scheme
            else "it has no scheme (http:// or https://)"
        )
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.username is not None or parts.password is not None:
        problem = "it holds user info (pass the key through --api-key-env instead)"
    elif any(c.isspace() for c in url):
        problem = "it holds whitespace"
    elif port == 0:
        problem = "port 0 is not a port"
    if problem:
        raise ValueError(
            f"--base-url / base_url {shown} is not an endpoint URL: {problem}; expected e.g. "
            "http://localhost:8000/v1"
        )


def capped_http_client(max_bytes: int) -> Any:
    """The SDK's default async HTTP client, reading at most `max_bytes` of any reply body."""
    import openai

    async def identity(request: Any) -> None:
        request.headers["Accept-Encoding"] = "identity"

    async def cap(response: Any) -> None:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ReplyTooLarge(
                f"reply compressed with {encoding!r} although an uncompressed one was asked "
                "for (its size cannot be bounded before it is inflated)"
            )
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise ReplyTooLarge(
                f"reply of {int(declared):,} bytes over the {max_bytes:,}-byte limit; not read"
            )
        response.stream = _CappedStream(response.stream, max_bytes)

    return openai.DefaultAsyncHttpxClient(event_hooks={"request": [identity], "response": [cap]})
