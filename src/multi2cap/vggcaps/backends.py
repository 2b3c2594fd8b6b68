"""Caption backends: one request per clip and stage, answered by an LLM or by templates.

- `OpenAIChatBackend`: Chat Completions through `openai.AsyncOpenAI` with the SDK's own retries
  switched off (`max_retries=0`) so the retry loop here is visible (progress bar), testable, and
  honours `Retry-After`; requests/min and tokens/min limits; a deadline on each whole request
  (connect, first byte and body) and a cap on the bytes read (`multi2cap.vggcaps.transport`),
  so an endpoint that trickles or floods costs one failed try, not the build. The body is
  posted with the SDK's documented raw `client.post` (same endpoint, auth, errors and timeouts as
  `chat.completions.create`) because the typed path re-walks every base64 image per request and
  cost about half of our per-request CPU.
- `OfflineBackend`: `multi2cap.vggcaps.offline` templates over measured descriptors; no network.

Both return a `Completion` or raise `RequestFailed` with a reason that never contains the key.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import soundfile
from PIL import Image

from multi2cap.vggcaps.cost import CHARS_PER_TOKEN, image_tokens
from multi2cap.vggcaps.descriptors import describe_audio, describe_image
from multi2cap.vggcaps.offline import offline_stage1, offline_stage2
from multi2cap.vggcaps.transport import (
    DEFAULT_MAX_REPLY_BYTES,
    ReplyTooLarge,
    capped_http_client,
    check_base_url,
)

RETRYABLE_STATUS = frozenset({408, 409, 429})
# answers that would be the same for every clip: the build stops with the reason
FATAL_STATUS = {
    401: "the key in the API key variable was rejected",
    403: "this key may not use this model or endpoint",
    404: "wrong --base-url or unknown --model",
}
OFFLINE_MODEL = "offline-descriptors-v1"
ABSURD_FACTOR = 20.0
ABSURD_FLOOR = 20_000
# connection errors in a row, before any answer, after which the endpoint counts as down
UNREACHABLE_AFTER = 8
log = logging.getLogger(__name__)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what an API key may hold: printable ASCII without spaces (it travels in an HTTP header)
KEY_CHARS = re.compile(r"[\x21-\x7e]+")
ImageDetail = Literal["low", "high", "auto"]
MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]
IMAGE_DETAILS: tuple[ImageDetail, ...] = get_args(ImageDetail)
MAX_TOKENS_PARAMS: tuple[MaxTokensParam, ...] = get_args(MaxTokensParam)


class RequestFailed(Exception):
    """A request that failed for good (retries spent or not retryable); `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BackendConfigError(ValueError):
    """The backend cannot work (the API key variable is unset, or the endpoint rejects the key,
    the model or the URL); the build stops instead of failing every clip."""


@dataclass
class OpenAISettings:
    """Endpoint and request settings shared by the `openai` and `openai-batch` backends.

    `api_key_env` names the environment variable holding the key (the key itself is never a
    setting). `timeout_s` bounds one whole HTTP request (connect, first byte and the whole body,
    however slowly the endpoint sends it); `max_reply_bytes` caps the bytes read from one reply
    (more is a failed try, retried like a malformed reply); `max_retries` counts retries after
    the first try; backoff doubles from `backoff_base_s` up to `backoff_max_s` with jitter, unless the server
    sends `Retry-After`, which is honoured up to `max_retry_after_s`. `rpm`/`tpm` are
    requests/tokens per minute (None: unlimited); a request takes its estimated tokens from the
    tokens/min bucket before it is sent and is settled with the reported usage afterwards.
    `temperature` and `max_tokens` are omitted from the request when None; `max_tokens_param` is
    `max_completion_tokens` for o-series models. `image_detail` is OpenAI's `low|high|auto`.

    Every value is checked here, when the settings are made, so a bad option stops the build
    before anything is extracted or paid for (a `ValueError` naming the option and the value).
    """

    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    rpm: float | None = None
    tpm: float | None = None
    temperature: float | None = None
    max_tokens: int | None = 300
    max_tokens_param: MaxTokensParam = "max_tokens"
    image_detail: ImageDetail = "low"
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES

    def __post_init__(self) -> None:
        self._check_values()
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(
                    f"{name} must be a positive number of {'requests' if name == 'rpm' else 'tokens'}"
                    f" per minute, found {value!r} (leave it unset for no limit)"
                )
        looks_like_key = self.api_key_env.startswith(("sk-", "sk_"))
        if looks_like_key or not ENV_NAME.fullmatch(self.api_key_env):
            # never echo it: what was given may be the key itself
            raise BackendConfigError(
                "--api-key-env / api_key_env takes the NAME of an environment variable (e.g. "
                "OPENAI_API_KEY), and what was given "
                + ("looks like an API key itself" if looks_like_key else "is not a variable name")
                + " (not shown, so it stays out of logs); export the key, e.g. "
                "`export OPENAI_API_KEY=...`, and pass the variable's name"
            )

    def _check_values(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(
                f"--timeout / timeout_s must be a positive number of seconds, found "
                f"{self.timeout_s!r}"
            )
        if self.max_tokens is not None and not self.max_tokens >= 1:
            raise ValueError(
                f"--max-tokens / max_tokens must be at least 1, found {self.max_tokens!r}"
            )
        if self.temperature is not None and not (
            math.isfinite(self.temperature) and self.temperature >= 0
        ):
            raise ValueError(
                f"--temperature / temperature must be 0 or more, found {self.temperature!r}"
            )
        if self.image_detail not in IMAGE_DETAILS:
            raise ValueError(
                f"--image-detail / image_detail must be one of {', '.join(IMAGE_DETAILS)}, "
                f"found {self.image_detail!r}"
            )
        if self.max_tokens_param not in MAX_TOKENS_PARAMS:
            raise ValueError(
                f"--max-tokens-param / max_tokens_param must be one of "
                f"{', '.join(MAX_TOKENS_PARAMS)}, found {self.max_tokens_param!r}"
            )
        if not self.max_reply_bytes >= 1024:
            raise ValueError(
                f"--max-reply-bytes / max_reply_bytes must be at least 1024, found "
                f"{self.max_reply_bytes!r}"
            )
        if self.base_url is not None:
            check_base_url(self.base_url)

    def api_key(self) -> str:
        """The key from the variable named by `api_key_env`. A key that could not be sent in an
        HTTP header (a trailing CR/LF from a pasted file, a space, non-ASCII characters) is
        refused here, naming the variable and never showing the value: sent, it read as
        "server not reachable" or failed every clip as a malformed response."""
        key = os.environ.get(self.api_key_env)
        if not key:
            raise BackendConfigError(
                f"environment variable {self.api_key_env} is not set; export the API key there "
                "(local servers accept any value, e.g. EMPTY)"
            )
        if not KEY_CHARS.fullmatch(key):
            if key != key.strip():
                found = "starts or ends with whitespace or a line break (CR/LF)"
            elif not key.isascii():
                found = "holds non-ASCII characters"
            else:
                found = "holds spaces or control characters"
            raise BackendConfigError(
                f"the API key in environment variable {self.api_key_env} {found} (value not "
                "shown); an API key is printable ASCII without spaces: export it again, e.g. "
                f"`export {self.api_key_env}=\"$(tr -d '\\r\\n' < keyfile)\"`"
            )
        return key


@dataclass(frozen=True)
class StageRequest:
    """One caption request. `prompt` is the rendered template; `image` is the spectrogram PNG
    (stage 1) or the frame JPEG (stage 2); `audio` is the FLAC (used by the offline backend)."""

    clip_id: str
    stage: int
    prompt: str
    image: Path
    category: str
    audio: Path
    raw_caption: str | None = None


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
    """Live counters shown by the progress bar and returned in the summary."""

    requests: int = 0
    in_flight: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    usage_clamped: int = 0


class Backend(Protocol):
    name: str
    model: str

    async def complete(self, request: StageRequest) -> Completion: ...

    async def aclose(self) -> None: ...


def data_url(path: Path) -> str:
    """A base64 `data:` URL for a PNG or JPEG file."""
    mime = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def chat_body(request: StageRequest, settings: OpenAISettings) -> dict[str, Any]:
    """The Chat Completions request body: one user message, prompt text then the image."""
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": request.prompt},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": data_url(request.image),
                            "detail": settings.image_detail,
                        },
                    },
                ],
            }
        ],
    }
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.max_tokens is not None:
        body[settings.max_tokens_param] = settings.max_tokens
    return body


def parse_chat_response(payload: Any) -> Completion:
    """Read text, refusal and usage from a Chat Completions response body (dict form).

    `content` may be a string or, as some servers send it, a list of parts (`{"type": "text",
    "text": ...}`), whose texts are joined. Any other shape (choices not a list, message not
    an object, content a number, usage not numbers) raises `ValueError`: a malformed reply,
    retried like a transport error and then a failure record, never a crash of the build."""
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
            # other parts (images, audio) carry no caption
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
    characters / 4 + image tokens; completion: the reply's characters / 4), and one warning
    per run says so."""

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


def usage_guard(request: StageRequest, settings: OpenAISettings) -> UsageGuard:
    """The `UsageGuard` of one request: its prompt and one image at the request's detail (at
    `high`, the largest GPT-4o image: 2048x768 after scaling, 8 tiles)."""
    image = image_tokens(2048, 768, settings.image_detail)
    return UsageGuard(len(request.prompt) / CHARS_PER_TOKEN + image, settings.max_tokens)


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


@dataclass
class OpenAIChatBackend:
    """Chat Completions with bounded concurrency, rate limits and its own retry loop."""

    settings: OpenAISettings
    stats: RunStats
    name: str = "openai"
    model: str = field(init=False)
    _client: Any = field(init=False, repr=False)
    _key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import openai

        self.model = self.settings.model
        self._key = self.settings.api_key()
        self._client = openai.AsyncOpenAI(
            api_key=self._key,
            base_url=self.settings.base_url,
            max_retries=0,
            timeout=self.settings.timeout_s,
            http_client=capped_http_client(self.settings.max_reply_bytes),
        )
        self._slots = asyncio.Semaphore(max(1, self.settings.concurrency))
        self._rpm = RateLimiter(self.settings.rpm)
        self._tpm = RateLimiter(self.settings.tpm)
        self._rng = random.Random()
        self._answered = False  # any HTTP answer at all, so the endpoint is up
        self._refused = 0  # connection errors before the first answer

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(model={self.model!r}, base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: StageRequest) -> Completion:
        import openai

        body = chat_body(request, self.settings)
        guard = usage_guard(request, self.settings)
        estimated = guard.estimated_prompt_tokens + (self.settings.max_tokens or 300)
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
                    async with asyncio.timeout(self.settings.timeout_s):
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
                            f"the endpoint {self.settings.base_url or 'api.openai.com'} answered "
                            f"HTTP {status} ({FATAL_STATUS[status]}) for model "
                            f"{self.settings.model!r}; stopping instead of failing every clip"
                        ) from None
                    reason = f"HTTP {status} from the endpoint"
                    retryable = status in RETRYABLE_STATUS or status >= 500
                    delay = retry_after_seconds(err.response.headers) if retryable else None
                except (openai.APITimeoutError, TimeoutError):
                    reason, retryable, delay = (
                        f"timed out after {self.settings.timeout_s:g} s",
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
                            f"the endpoint {self.settings.base_url or 'api.openai.com'} could "
                            f"not be reached on any of the first {self._refused} tries "
                            f"({type(err).__name__}); is the server running and --base-url "
                            "right? Stopping instead of failing every clip"
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
            if not retryable or attempt >= self.settings.max_retries:
                raise RequestFailed(
                    redact(f"{reason}; gave up after {attempt + 1} tries", self._key)
                )
            if delay is not None and delay > self.settings.max_retry_after_s:
                raise RequestFailed(
                    f"{reason} with Retry-After {delay:.0f} s > {self.settings.max_retry_after_s:g} s"
                )
            if delay is None:
                delay = backoff_delay(
                    attempt, self.settings.backoff_base_s, self.settings.backoff_max_s, self._rng
                )
            self.stats.retries += 1
            self.stats.retry_wait_s += delay
            attempt += 1
            await asyncio.sleep(delay)


@dataclass
class OfflineBackend:
    """Deterministic template captions from measured descriptors (not an LLM; usage is zero)."""

    name: str = "offline"
    model: str = OFFLINE_MODEL

    async def complete(self, request: StageRequest) -> Completion:
        text = await asyncio.to_thread(self._caption, request)
        return Completion(text=text, prompt_tokens=0, completion_tokens=0)

    async def aclose(self) -> None:
        return None

    @staticmethod
    def _caption(request: StageRequest) -> str:
        if request.stage == 1:
            wave, sample_rate = soundfile.read(str(request.audio), dtype="float32", always_2d=True)
            descriptors = describe_audio(wave.mean(axis=1), sample_rate)
            return offline_stage1(request.clip_id, request.category, descriptors)
        with Image.open(request.image) as image:
            descriptors = describe_image(image)
        return offline_stage2(request.clip_id, request.raw_caption or "", descriptors)
