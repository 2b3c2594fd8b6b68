"""Caption backends: one request per clip and stage, answered by an LLM or by templates.

- `OpenAIChatBackend`: Chat Completions through the package's one client layer
  (`multi2cap.llm_client`: the SDK's retries off and our own visible retry loop honouring
  `Retry-After`, requests/min and tokens/min limits, a deadline on each whole request and a cap
  on the bytes read). This module adds what is the builder's own: the request of one clip and
  stage (prompt text then the spectrogram or frame as a `data:` URL) and its usage estimate.
- `OfflineBackend`: `multi2cap.vggcaps.offline` templates over measured descriptors; no network.

Both return a `Completion` or raise `RequestFailed` with a reason that never contains the key.
The client layer's names (`OpenAISettings`' base `ChatSettings`, `RequestFailed`, `RateLimiter`,
`parse_chat_response`, ...) are re-exported here for the builder's callers.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import soundfile
from PIL import Image

from multi2cap.llm_client.chat import (
    ABSURD_FACTOR,
    ABSURD_FLOOR,
    FATAL_STATUS,
    RETRYABLE_STATUS,
    UNREACHABLE_AFTER,
    ChatClient,
    Completion,
    RateLimiter,
    RequestFailed,
    RunStats,
    UsageGuard,
    backoff_delay,
    parse_chat_response,
    redact,
    retry_after_seconds,
)
from multi2cap.llm_client.settings import (
    ENV_NAME,
    KEY_CHARS,
    MAX_TOKENS_PARAMS,
    BackendConfigError,
    ChatSettings,
    MaxTokensParam,
)
from multi2cap.vggcaps.cost import CHARS_PER_TOKEN, image_tokens
from multi2cap.vggcaps.descriptors import describe_audio, describe_image
from multi2cap.vggcaps.offline import offline_stage1, offline_stage2

__all__ = [
    "ABSURD_FACTOR",
    "ABSURD_FLOOR",
    "ENV_NAME",
    "FATAL_STATUS",
    "IMAGE_DETAILS",
    "KEY_CHARS",
    "MAX_TOKENS_PARAMS",
    "OFFLINE_MODEL",
    "RETRYABLE_STATUS",
    "UNREACHABLE_AFTER",
    "Backend",
    "BackendConfigError",
    "Completion",
    "ImageDetail",
    "MaxTokensParam",
    "OfflineBackend",
    "OpenAIChatBackend",
    "OpenAISettings",
    "RateLimiter",
    "RequestFailed",
    "RunStats",
    "StageRequest",
    "UsageGuard",
    "backoff_delay",
    "chat_body",
    "data_url",
    "parse_chat_response",
    "redact",
    "retry_after_seconds",
    "usage_guard",
]

OFFLINE_MODEL = "offline-descriptors-v1"
ImageDetail = Literal["low", "high", "auto"]
IMAGE_DETAILS: tuple[ImageDetail, ...] = get_args(ImageDetail)


@dataclass
class OpenAISettings(ChatSettings):
    """Endpoint and request settings shared by the `openai` and `openai-batch` backends: the
    client layer's `ChatSettings` (endpoint, key variable, timeouts, retries, rate limits,
    temperature, token cap, reply cap; all checked when made) plus `image_detail`, OpenAI's
    `low|high|auto` for the spectrogram and frame images."""

    image_detail: ImageDetail = "low"

    def _check_values(self) -> None:
        super()._check_values()
        if self.image_detail not in IMAGE_DETAILS:
            raise ValueError(
                f"--image-detail / image_detail must be one of {', '.join(IMAGE_DETAILS)}, "
                f"found {self.image_detail!r}"
            )


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
    body.update(settings.sampling_fields())
    return body


def usage_guard(request: StageRequest, settings: OpenAISettings) -> UsageGuard:
    """The `UsageGuard` of one request: its prompt and one image at the request's detail (at
    `high`, the largest GPT-4o image: 2048x768 after scaling, 8 tiles)."""
    image = image_tokens(2048, 768, settings.image_detail)
    return UsageGuard(len(request.prompt) / CHARS_PER_TOKEN + image, settings.max_tokens)


@dataclass
class OpenAIChatBackend:
    """One clip's stage request through the client layer's `ChatClient` (bounded concurrency,
    rate limits, deadlines, reply cap, retries; see `multi2cap.llm_client.chat`)."""

    settings: OpenAISettings
    stats: RunStats
    name: str = "openai"
    model: str = field(init=False)
    _chat: ChatClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.model = self.settings.model
        self._chat = ChatClient(self.settings, self.stats, unit="clip")

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(model={self.model!r}, base_url={self.settings.base_url!r})"

    async def aclose(self) -> None:
        await self._chat.aclose()

    async def complete(self, request: StageRequest) -> Completion:
        body = chat_body(request, self.settings)
        return await self._chat.post(body, usage_guard(request, self.settings))


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
