"""The dry-run estimate of a build's cost and time, and GPT-4o image tokens.

Prices (US dollars per 1M tokens, GPT-4o list prices by default) live in
`multi2cap.llm_client.prices`, shared with the CLAIR-A judge; they are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from multi2cap.llm_client.prices import (
    BATCH_DISCOUNT,
    CHARS_PER_TOKEN,
    GPT4O_INPUT_PER_M,
    GPT4O_OUTPUT_PER_M,
    Prices,
)

__all__ = [
    "BATCH_DISCOUNT",
    "CHARS_PER_TOKEN",
    "GPT4O_INPUT_PER_M",
    "GPT4O_OUTPUT_PER_M",
    "LOW_DETAIL_IMAGE_TOKENS",
    "Estimate",
    "Prices",
    "estimate_build",
    "image_tokens",
]

LOW_DETAIL_IMAGE_TOKENS = 85


def image_tokens(width: int, height: int, detail: str) -> int:
    """GPT-4o-class image token count: 85 at `low`; at `high`/`auto`, 85 + 170 per 512-px tile
    after fitting into 2048x2048 and scaling the short side to 768 (newer models count
    differently; the build logs the real `usage`)."""
    if detail == "low":
        return LOW_DETAIL_IMAGE_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return LOW_DETAIL_IMAGE_TOKENS + 170 * math.ceil(w / 512) * math.ceil(h / 512)


@dataclass(frozen=True)
class Estimate:
    """What a build would cost: tokens and dollars over both stages, and hours at the given
    concurrency (requests take `latency_s` each, capped by requests/min when set)."""

    clips: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    hours: float


def estimate_build(
    clips: int,
    stage1_prompt_chars: int,
    stage2_prompt_chars: int,
    stage1_image_tokens: int,
    stage2_image_tokens: int,
    prices: Prices,
    batch: bool,
    concurrency: int,
    rpm: float | None,
    completion_tokens_per_request: int = 60,
    latency_s: float = 4.0,
) -> Estimate:
    """Estimate from prompt lengths (about 4 characters per token), image tokens and an assumed
    reply length (stage 2 also reads the stage-1 reply)."""
    stage1 = stage1_prompt_chars / CHARS_PER_TOKEN + stage1_image_tokens
    stage2 = stage2_prompt_chars / CHARS_PER_TOKEN + stage2_image_tokens
    stage2 += completion_tokens_per_request
    prompt_tokens = round(clips * (stage1 + stage2))
    completion_tokens = clips * 2 * completion_tokens_per_request
    requests = 2 * clips
    per_second = max(concurrency, 1) / latency_s
    if rpm:
        per_second = min(per_second, rpm / 60.0)
    return Estimate(
        clips=clips,
        requests=requests,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_usd=prices.cost(prompt_tokens, completion_tokens, batch=batch),
        hours=requests / per_second / 3600.0,
    )
