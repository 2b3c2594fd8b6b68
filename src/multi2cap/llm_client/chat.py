"""`ChatClient`: Chat Completions requests with bounded concurrency, rate limits, deadlines, a
reply size cap and its own retry loop; and the reading of a reply.

Through `openai.AsyncOpenAI` with the SDK's own retries switched off (`max_retries=0`) so the
retry loop here is visible (progress bars), testable, and honours `Retry-After`; requests/min and
tokens/min limits; a deadline on each whole request (connect, first byte and body) and a cap on
the bytes read (`multi2cap.llm_client.transport`), so an endpoint that trickles or floods costs
one failed try, not the job. The body is posted with the SDK's documented raw `client.post`
(same endpoint, auth, errors and timeouts as `chat.completions.create`): the typed path re-walks
every base64 image per request and cost the VggCaps builder about half of its per-request CPU.

Callers build the request body (the builder: prompt + image; the CLAIR-A judge: text only) and
get a `Completion` back, or `RequestFailed` with a reason that never contains the key, or
`BackendConfigError` for answers that would be the same for every request (401/403/404, an
endpoint that never answers).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from dataclasses import dataclass, replace
from typing import Any

from multi2cap.llm_client.prices import CHARS_PER_TOKEN
from multi2cap.llm_client.settings import BackendConfigError, ChatSettings
from multi2cap.llm_client.transport import ReplyTooLarge, capped_http_client

RETRYABLE_STATUS = frozenset({408, 409, 429})
# answers that would be the same for every request: the job stops with the reason
FATAL_STATUS = {
    401: "the key in the API key variable was rejected",
    403: "this key may not use this model or endpoint",
    404: "wrong --base-url or unknown --model",
}
ABSURD_FACTOR = 20.0
ABSURD_FLOOR = 20_000
# connection errors in a row, before any answer, after which the endpoint counts as down
UNREACHABLE_AFTER = 8
log = logging.getLogger(__name__)


class RequestFailed(Exception):
    """A request that failed for good (retries spent or not retryable); `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Completion:
    """The model's text (None when it sent no content), token usage, and why the model stopped
    (`finish_reason`: `stop`, `length` when it hit the token cap, None when not sent)."""

    text: str | None
    prompt_tokens: int
    completion_tokens: int
    refusal: str | None = None
    finish_reason: str | None = None


@dataclass
class RunStats:
    """Live counters shown by progress bars and returned in summaries."""

    requests: int = 0
    in_flight: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    usage_clamped: int = 0


def parse_chat_response(payload: Any) -> Completion:
    """Read text, refusal and usage from a Chat Completions response body (dict form).

    `content` may be a string or, as some servers send it, a list of parts (`{"type": "text",
    "text": ...}`), whose texts are joined. Any other shape (choices not a list, message not
    an object, content a number, usage not numbers) raises `ValueError`: a malformed reply,
    retried like a transport error and then a failure record, never a crash of the job."""
    if not isinstance(payload, dict):
        raise ValueError("response is not a JSON object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("response has no list of choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ValueError("the choice's message is not an object")
    refusal = message.get("refusal")
    if refusal is not None and not isinstance(refusal, str):
        raise ValueError("the message's refusal is not a string")
    usage = payload.get("usage") or {}
    if not isinstance(usage, dict):
        raise ValueError("usage is not an object")
    finish_reason = choices[0].get("finish_reason")
    return Completion(
        text=_content_text(message.get("content")),
        prompt_tokens=_token_count(usage, "prompt_tokens"),
        completion_tokens=_token_count(usage, "completion_tokens"),
        refusal=refusal,
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
    )


def _content_text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "output_text"):
                if not isinstance(part.get("text"), str):
                    raise ValueError("a text part of the content has no text")
                texts.append(part["text"])
            # other parts (images, audio) carry no text
        return "".join(texts) if texts else None
    raise ValueError(f"the message content is a {type(content).__name__}, not text")


def _token_count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name) or 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"usage.{name} is not a number")
    return int(value)


@dataclass(frozen=True)
class UsageGuard:
    """Reported token counts are checked against the request before they are charged: a
    count below zero or above `ABSURD_FACTOR` times the request's own estimate (and above
    `ABSURD_FLOOR`) is absurd (a server once reported `prompt_tokens: -1000000`, a cost of
    $-2.50). Then both counts are replaced by the estimate from the request (prompt: its
    characters / 4, plus image tokens where it has images; completion: the reply's characters
    / 4), and one warning per run says so."""

    estimated_prompt_tokens: float
    max_completion_tokens: int | None

    def check(self, completion: Completion, stats: RunStats) -> Completion:
        prompt_limit = max(ABSURD_FLOOR, ABSURD_FACTOR * self.estimated_prompt_tokens)
        completion_limit = max(ABSURD_FLOOR, ABSURD_FACTOR * (self.max_completion_tokens or 0))
        if (
            0 <= completion.prompt_tokens <= prompt_limit
            and 0 <= completion.completion_tokens <= completion_limit
        ):
            return completion
        if not stats.usage_clamped:
            log.warning(
                "the endpoint reported absurd token usage (prompt %d, completion %d); counting "
                "this and any later such reply from the request's size instead",
                completion.prompt_tokens,
                completion.completion_tokens,
            )
        stats.usage_clamped += 1
        reply = (completion.text or "") + (completion.refusal or "")
        return replace(
            completion,
            prompt_tokens=round(self.estimated_prompt_tokens),
            completion_tokens=math.ceil(len(reply) / CHARS_PER_TOKEN),
        )


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of `secret` in `text`."""
    return text.replace(secret, "***") if secret else text


class RateLimiter:
    """Token bucket refilled continuously at `per_minute / 60` units per second; capacity
    `per_minute` (a request larger than the capacity waits for a full bucket).

    The bucket starts with one second's worth (at least one unit), not full: a full bucket let
    `--rpm 30` send 30 requests at t=0, which a server counting per second or per few seconds
    answers with 429s. `per_minute` None means no limit; zero or below is refused."""

    def __init__(self, per_minute: float | None) -> None:
        if per_minute is not None and not per_minute > 0:
            raise ValueError(f"a rate limit must be positive, found {per_minute!r}")
        self.per_minute = per_minute
        self._level = min(per_minute, max(1.0, per_minute / 60.0)) if per_minute else 0.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        if not self.per_minute:
            return
        amount = min(amount, self.per_minute)
        rate = self.per_minute / 60.0
        async with self._lock:
            while True:
                now = time.monotonic()
                self._level = min(self.per_minute, self._level + (now - self._stamp) * rate)
                self._stamp = now
                if self._level >= amount:
                    self._level -= amount
                    return
                await asyncio.sleep((amount - self._level) / rate)

    def settle(self, estimated: float, actual: float) -> None:
        """Correct an earlier `acquire(estimated)` once the real amount is known: unused units
        go back (up to capacity), an overrun is taken (the level may go negative, which makes
        the next requests wait)."""
        if self.per_minute:
            self._level = min(self.per_minute, self._level + estimated - actual)

    @property
    def available(self) -> float:
        """Units in the bucket at the last update (not refilled to now)."""
        return self._level


def retry_after_seconds(headers: Any) -> float | None:
    """Server-directed delay from `retry-after-ms` or `retry-after` (seconds or HTTP date);
    None when absent or unreadable, so the caller falls back to its backoff."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):  # neither seconds nor a date (`soon`): use the backoff
        return None
    return max(0.0, parsed.timestamp() - time.time())


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half the capped delay plus a random half, so 64
    workers hit by the same 429 do not come back in lockstep. `attempt` counts from 0."""
    capped = min(max_s, base_s * 2.0**attempt)
    return capped / 2.0 + rng.random() * capped / 2.0


class ChatClient:
    """Chat Completions with bounded concurrency, rate limits and its own retry loop.

    `unit` names what one request is for (`clip` in the builder, `item` for the judge) in the
    messages that stop a job. The key is read from `settings.api_key_env` here, once; it is
    sent in the Authorization header only and redacted from every reason."""

    def __init__(self, settings: ChatSettings, stats: RunStats, unit: str = "request") -> None:
        import openai

        self.settings = settings
        self.stats = stats
        self.unit = unit
        self._key = settings.api_key()
        self._client = openai.AsyncOpenAI(
            api_key=self._key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=capped_http_client(settings.max_reply_bytes),
        )
        self._slots = asyncio.Semaphore(max(1, settings.concurrency))
        self._rpm = RateLimiter(settings.rpm)
        self._tpm = RateLimiter(settings.tpm)
        self._rng = random.Random()
        self._answered = False  # any HTTP answer at all, so the endpoint is up
        self._refused = 0  # connection errors before the first answer

    def __repr__(self) -> str:
        return f"ChatClient(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    @property
    def endpoint(self) -> str:
        return self.settings.base_url or "api.openai.com"

    async def aclose(self) -> None:
        await self._client.close()

    async def post(self, body: dict[str, Any], guard: UsageGuard) -> Completion:
        """Send one Chat Completions `body`, retrying 408/409/429/5xx, timeouts, connection
        errors, malformed and oversized replies up to `max_retries` times (honouring
        `Retry-After` up to `max_retry_after_s`, else backing off with jitter)."""
        import openai

        settings = self.settings
        estimated = guard.estimated_prompt_tokens + (settings.max_tokens or 300)
        attempt = 0
        while True:
            await self._rpm.acquire(1.0)
            await self._tpm.acquire(estimated)
            delay: float | None
            async with self._slots:
                self.stats.in_flight += 1
                self.stats.requests += 1
                try:
                    # the SDK's timeout bounds each phase and read; this bounds the whole try
                    async with asyncio.timeout(settings.timeout_s):
                        payload = await self._client.post(
                            "/chat/completions", cast_to=object, body=body
                        )
                    self._answered = True
                    completion = guard.check(parse_chat_response(payload), self.stats)
                    self._tpm.settle(
                        min(estimated, self._tpm.per_minute or estimated),
                        completion.prompt_tokens + completion.completion_tokens,
                    )
                    return completion
                except openai.APIStatusError as err:
                    self._answered = True
                    status = err.status_code
                    if status in FATAL_STATUS:
                        raise BackendConfigError(
                            f"the endpoint {self.endpoint} answered HTTP {status} "
                            f"({FATAL_STATUS[status]}) for model {settings.model!r}; stopping "
                            f"instead of failing every {self.unit}"
                        ) from None
                    reason = f"HTTP {status} from the endpoint"
                    retryable = status in RETRYABLE_STATUS or status >= 500
                    delay = retry_after_seconds(err.response.headers) if retryable else None
                except (openai.APITimeoutError, TimeoutError):
                    reason, retryable, delay = (
                        f"timed out after {settings.timeout_s:g} s",
                        True,
                        None,
                    )
                except ReplyTooLarge as err:
                    self._answered = True
                    reason, retryable, delay = err.reason, True, None
                except openai.APIConnectionError as err:
                    self._refused += not self._answered
                    if self._refused >= UNREACHABLE_AFTER:
                        raise BackendConfigError(
                            f"the endpoint {self.endpoint} could not be reached on any of the "
                            f"first {self._refused} tries ({type(err).__name__}); is the server "
                            f"running and --base-url right? Stopping instead of failing every "
                            f"{self.unit}"
                        ) from None
                    reason, retryable, delay = (
                        f"connection error ({type(err).__name__})",
                        True,
                        None,
                    )
                except (openai.APIResponseValidationError, ValueError) as err:
                    reason, retryable, delay = (
                        f"malformed response ({type(err).__name__})",
                        True,
                        None,
                    )
                finally:
                    self.stats.in_flight -= 1
            if not retryable or attempt >= settings.max_retries:
                raise RequestFailed(
                    redact(f"{reason}; gave up after {attempt + 1} tries", self._key)
                )
            if delay is not None and delay > settings.max_retry_after_s:
                raise RequestFailed(
                    f"{reason} with Retry-After {delay:.0f} s > {settings.max_retry_after_s:g} s"
                )
            if delay is None:
                delay = backoff_delay(
                    attempt, settings.backoff_base_s, settings.backoff_max_s, self._rng
                )
            self.stats.retries += 1
            self.stats.retry_wait_s += delay
            attempt += 1
            await asyncio.sleep(delay)
