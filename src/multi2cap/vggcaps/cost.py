"""Token prices and the dry-run estimate of cost and time.

Prices are US dollars per 1M tokens. Defaults are GPT-4o list prices ($2.50 input, $10.00 output;
the Batch API halves both). They change: set your own in `Prices` or on the command line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GPT4O_INPUT_PER_M = 2.50
GPT4O_OUTPUT_PER_M = 10.00
BATCH_DISCOUNT = 0.5
LOW_DETAIL_IMAGE_TOKENS = 85
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Prices:
    """Dollars per 1M tokens; `batch_discount` multiplies both for the `openai-batch` backend."""

    input_per_m: float = GPT4O_INPUT_PER_M
    output_per_m: float = GPT4O_OUTPUT_PER_M
    batch_discount: float = BATCH_DISCOUNT

    def __post_init__(self) -> None:
        for name, what in (
            ("--price-input / input_per_m", self.input_per_m),
            ("--price-output / output_per_m", self.output_per_m),
            ("batch_discount", self.batch_discount),
        ):
            if not (math.isfinite(what) and what >= 0):
                raise ValueError(f"{name} must be a number >= 0, found {what!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        factor = self.batch_discount if batch else 1.0
        return (
            factor
            * (prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m)
            / 1e6
        )


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
