"""Retry timing helpers, request bodies, cost arithmetic and the progress figures."""

from __future__ import annotations

import email.utils
import random
import time
from pathlib import Path

import pytest
from PIL import Image

from multi2cap.vggcaps.backends import (
    OpenAISettings,
    RunStats,
    StageRequest,
    backoff_delay,
    chat_body,
    parse_chat_response,
    redact,
    retry_after_seconds,
)
from multi2cap.vggcaps.cost import Prices, image_tokens
from multi2cap.vggcaps.progress import StageProgress


def test_retry_after_in_ms_seconds_or_http_date() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after_seconds({"retry-after": when}) <= 30
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


def test_backoff_doubles_caps_and_jitters() -> None:
    rng = random.Random(0)
    for attempt, cap in ((0, 0.5), (1, 1.0), (2, 2.0), (10, 30.0)):
        delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) == 50


def test_chat_body_text_then_image_and_optional_fields(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "s.png")
    request = StageRequest("c", 1, "prompt text", tmp_path / "s.png", "dog", tmp_path / "a.flac")
    body = chat_body(request, OpenAISettings(model="m", max_tokens=None, image_detail="high"))
    assert set(body) == {"model", "messages"}
    text, image = body["messages"][0]["content"]
    assert text == {"type": "text", "text": "prompt text"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert image["image_url"]["detail"] == "high"
    settings = OpenAISettings(
        temperature=0.2, max_tokens=99, max_tokens_param="max_completion_tokens"
    )
    body = chat_body(request, settings)
    assert body["temperature"] == 0.2 and body["max_completion_tokens"] == 99


def test_parse_chat_response_and_redact() -> None:
    payload = {
        "choices": [{"message": {"content": "hi", "refusal": None}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    completion = parse_chat_response(payload)
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == ("hi", 7, 2)
    with pytest.raises(ValueError):
        parse_chat_response({"choices": []})
    with pytest.raises(ValueError):
        parse_chat_response([1, 2])
    assert redact("key sk-1 leaked sk-1", "sk-1") == "key *** leaked ***"


def test_prices_and_image_tokens() -> None:
    prices = Prices()
    assert prices.cost(1_000_000, 0) == pytest.approx(2.50)
    assert prices.cost(0, 1_000_000, batch=True) == pytest.approx(5.00)
    assert image_tokens(1024, 768, "low") == 85
    assert image_tokens(1024, 768, "high") == 765  # 4 tiles, OpenAI's worked example
    assert image_tokens(512, 512, "high") == 255


def test_progress_figures() -> None:
    stats = RunStats(in_flight=5, retries=3, cost_usd=1.25)
    with StageProgress("caption", 10, stats, enabled=False) as bar:
        bar.advance(2)
        info = bar.info()
    assert "clips/s" in info and "in flight 5" in info and "retries 3" in info
    assert "$1.25" in info
    assert "in flight" not in StageProgress("extract", 1, None, enabled=False).info()


def test_token_bucket_is_settled_with_the_real_usage() -> None:
    import asyncio

    from multi2cap.vggcaps.backends import RateLimiter

    async def run() -> tuple[float, float]:
        limiter = RateLimiter(per_minute=60_000)  # starts with one second's worth: 1000
        await limiter.acquire(600)
        after_acquire = limiter.available
        limiter.settle(600, 100)
        return after_acquire, limiter.available

    after_acquire, settled = asyncio.run(run())
    assert after_acquire == pytest.approx(400, abs=5)
    assert settled == pytest.approx(900, abs=5)
