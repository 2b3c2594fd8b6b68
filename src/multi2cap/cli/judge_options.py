"""`multi2cap evaluate`'s options for the `clair_a` judge, and its estimate and summary lines.

The endpoint options carry the VggCaps builder's names and meanings (`--base-url`,
`--api-key-env`, `--concurrency`, `--rpm`, `--tpm`, `--timeout`, `--max-retries`,
`--max-tokens`, `--max-tokens-param`, `--temperature`, `--content-retries`, `--price-input`,
`--price-output`, `--dry-run`): one client layer, one vocabulary. Parsing and printing only; the
work is in `multi2cap.metrics.clair_a`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from multi2cap.llm_client.prices import Prices, dollars
from multi2cap.llm_client.settings import MAX_TOKENS_PARAMS
from multi2cap.metrics.clair_a import (
    RESPONSE_FORMATS,
    TIE_BREAKS,
    ClairAConfig,
    JudgeEstimate,
    judge_settings,
)
from multi2cap.metrics.clair_a.judge import DEFAULT_CONFIRM_ABOVE, JUDGE_MAX_TOKENS

ResponseFormatChoice = StrEnum("ResponseFormatChoice", {n: n for n in RESPONSE_FORMATS})
TieBreakChoice = StrEnum("TieBreakChoice", {n: n for n in TIE_BREAKS})
MaxTokensParamChoice = StrEnum("MaxTokensParamChoice", {n: n for n in MAX_TOKENS_PARAMS})

JUDGE_MODEL = typer.Option(
    None,
    "--judge-model",
    help="clair_a: the judge, a chat model of the endpoint (e.g. gpt-4o-2024-08-06, the paper's).",
)
BASE_URL = typer.Option(
    None, "--base-url", help="clair_a: OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."
)
KEY_ENV = typer.Option(
    "OPENAI_API_KEY", "--api-key-env", help="clair_a: name of the variable holding the key."
)
CONCURRENCY = typer.Option(16, "--concurrency", min=1, help="clair_a: requests in flight.")
RPM = typer.Option(None, "--rpm", help="clair_a: requests per minute limit (> 0; unset: none).")
TPM = typer.Option(None, "--tpm", help="clair_a: tokens per minute limit (> 0; unset: none).")
TIMEOUT = typer.Option(
    60.0, "--timeout", help="clair_a: seconds one request may take in all (> 0)."
)
MAX_RETRIES = typer.Option(
    6, "--max-retries", min=0, help="clair_a: retries per request (429/5xx/timeouts)."
)
MAX_TOKENS = typer.Option(
    JUDGE_MAX_TOKENS, "--max-tokens", help="clair_a: reply length cap in tokens (>= 1)."
)
MAX_TOKENS_PARAM = typer.Option(
    "max_tokens",
    "--max-tokens-param",
    help="clair_a: max_tokens, or max_completion_tokens for o-series judges.",
)
TEMPERATURE = typer.Option(
    0.0, "--temperature", help="clair_a: judge temperature (>= 0; 0 = greedy, as CLAIR-A)."
)
RESPONSE_FORMAT = typer.Option(
    "json_schema",
    "--response-format",
    help="clair_a: json_schema (strict verdict schema, as CLAIR-A), json_object, or none for "
    "servers without structured outputs.",
)
CONTENT_RETRIES = typer.Option(
    2, "--content-retries", min=0, help="clair_a: re-asks after a reply that is no verdict."
)
TIE_BREAK = typer.Option(
    "fense",
    "--tie-break",
    help="clair_a: fense (the paper's 1e-4 tie-break), sbert_sim (the authors' code), none.",
)
JUDGE_CACHE = typer.Option(
    None,
    "--judge-cache",
    help="clair_a: verdict cache file (env MULTI2CAP_JUDGE_CACHE; default "
    "~/.cache/multi2cap/clair_a.sqlite).",
)
PRICE_IN = typer.Option(
    None, "--price-input", help="clair_a: $ per 1M input tokens (>= 0; unset: tokens only)."
)
PRICE_OUT = typer.Option(
    None, "--price-output", help="clair_a: $ per 1M output tokens (>= 0; unset: tokens only)."
)
REASONS = typer.Option(
    None,
    "--reasons",
    help="clair_a: write each item's judge score and reason here (JSONL; default "
    "<scores file without .json>.clair_a.jsonl beside the scores file).",
)
CONFIRM_ABOVE = typer.Option(
    DEFAULT_CONFIRM_ABOVE,
    "--confirm-above",
    min=0,
    help="clair_a: a run sending more judge requests than this needs --yes.",
)
YES = typer.Option(False, "--yes", "-y", help="clair_a: go ahead with a large run.")
DRY_RUN = typer.Option(
    False, "--dry-run", help="clair_a: print the judge's estimate and stop; send nothing."
)


def judge_config(
    *,
    judge_model: str,
    base_url: str | None,
    api_key_env: str,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    timeout: float,
    max_retries: int,
    max_tokens: int,
    max_tokens_param: str,
    temperature: float,
    response_format: str,
    content_retries: int,
    tie_break: str,
    judge_cache: Path | None,
    price_input: float | None,
    price_output: float | None,
    confirm_above: int,
    yes: bool,
    progress: Callable[[int, int], None] | None,
) -> ClairAConfig:
    """The `ClairAConfig` of the options (a `ValueError` naming the bad option otherwise)."""
    prices = None
    if price_input is not None or price_output is not None:
        prices = Prices(input_per_m=price_input or 0.0, output_per_m=price_output or 0.0)
    settings = judge_settings(
        judge_model,
        base_url=base_url,
        api_key_env=api_key_env,
        concurrency=concurrency,
        rpm=rpm,
        tpm=tpm,
        timeout_s=timeout,
        max_retries=max_retries,
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        temperature=temperature,
    )
    return ClairAConfig(
        settings,
        response_format=response_format,  # type: ignore[arg-type]
        max_reasks=content_retries,
        cache=judge_cache,
        prices=prices,
        tie_break=tie_break,  # type: ignore[arg-type]
        confirm_above=confirm_above,
        assume_yes=yes,
        progress=progress,
    )


def print_estimate(console: Console, estimate: JudgeEstimate) -> None:
    """What the judge will send, before it sends anything."""
    cost = f", about {dollars(estimate.cost_usd)}" if estimate.cost_usd is not None else ""
    console.print(
        f"clair_a: {estimate.items} items, {estimate.cached} answered by the cache "
        f"({escape(estimate.cache)}); {estimate.requests} requests to {escape(estimate.judge_model)!r}"
        f", about {estimate.prompt_tokens:,} prompt + {estimate.completion_tokens:,} completion "
        f"tokens{cost} (4 characters per token, 150 reply tokens per verdict, re-asks not counted)"
    )


def print_summary(console: Console, settings: dict[str, Any]) -> None:
    """What the judge did and cost, and whether the tie-break was applied."""
    cost = f", {dollars(settings['cost_usd'])}" if "cost_usd" in settings else ""
    console.print(
        f"clair_a: judge {escape(settings['judge_model'])!r}, {settings['items']} items "
        f"({settings['cached']} from the cache, {settings['failed']} failed); "
        f"{settings['requests']} requests, {settings['retries']} retries, "
        f"{settings['reasks']} re-asks, {settings['prompt_tokens']:,} / "
        f"{settings['completion_tokens']:,} tokens in / out{cost}"
    )
    if "tie_break_missing" in settings:
        console.print(
            "[yellow]clair_a: the FENSE tie-break was left out (score / 100 only):[/yellow] "
            + escape(settings["tie_break_missing"])
        )
    else:
        console.print(f"clair_a: tie-break {settings['tie_break']} x {settings['epsilon']:g}")


def reasons_path(reasons: Path | None, output: Path | None) -> Path | None:
    """`--reasons`, else `<scores file without .json>.clair_a.jsonl` beside the scores file."""
    if reasons is not None:
        return reasons
    if output is not None:
        return output.with_name(output.name.removesuffix(".json") + ".clair_a.jsonl")
    return None
