"""Token prices, in US dollars per 1M tokens, and the characters-per-token rule of the estimates.

Defaults are GPT-4o list prices ($2.50 input, $10.00 output; the Batch API halves both). They
change: set your own in `Prices` or on the command line. Shared by the VggCaps builder's dry run
(`multi2cap.vggcaps.cost`) and the CLAIR-A judge's estimate (`multi2cap.metrics.clair_a`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GPT4O_INPUT_PER_M = 2.50
GPT4O_OUTPUT_PER_M = 10.00
BATCH_DISCOUNT = 0.5
#: About 4 characters of English per token: the rule every estimate before sending uses.
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


def dollars(amount: float) -> str:
    """An amount as printed in estimates and summaries: cents from $1, else four decimals."""
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:.4f}"
