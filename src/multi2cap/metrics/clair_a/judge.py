"""CLAIR-A as a metric: one judge request per (candidate, references), the verdict's score
combined with a FENSE tie-break, through any OpenAI-compatible chat endpoint.

Score of item i, on the raw scale of the other metrics ([0, 1]; tables print x100):

    clair_a_i = (1 - epsilon) * score_i / 100 + epsilon * fense_i      (epsilon = 1e-4)

as the authors define it (the paper's tie-break; their code's `clair_a()`). The judge's
integer score decides; FENSE only orders items the judge scored alike. `tie_break` names that
term: `fense` (the paper's reading, default), `sbert_sim` (what the authors' code adds: the
first value of `fense.Evaluator.sentence_score(..., return_error_prob=True)`, the SBERT cosine
before the fluency penalty) or `none` (score / 100). When the tie-break's models are not present
it is left out (score / 100) and the result's settings say so and why.

Requests go through the package's one client layer (`multi2cap.llm_client`: key from an
environment variable, retries with `Retry-After`, rate limits, deadlines, reply cap). A reply
that is not a strict verdict (`prompt.parse_verdict`: malformed JSON, a score out of range, a
refusal, an empty or cut reply) is answered with a re-ask naming the problem, at most
`max_reasks` times; then the item fails with its reason (its value is NaN, the corpus value is
the mean over the judged items, and the count of failures is in the settings). Verdicts are
cached (`cache.VerdictCache`); identical items are asked once. `estimate()` says what a run
would send before it sends anything, and a run of more than `confirm_above` requests refuses
to start unless `assume_yes`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from multi2cap.assets import AssetNotFoundError
from multi2cap.llm_client.chat import ChatClient, RequestFailed, RunStats, UsageGuard
from multi2cap.llm_client.prices import Prices, dollars
from multi2cap.llm_client.settings import BackendConfigError, ChatSettings
from multi2cap.metrics.clair_a.cache import VerdictCache, default_cache_path, verdict_key
from multi2cap.metrics.clair_a.prompt import (
    ASSUMED_REPLY_TOKENS,
    PROMPT_VERSION,
    RESPONSE_FORMATS,
    ResponseFormat,
    Verdict,
    VerdictError,
    parse_verdict,
    prompt_tokens,
    reask,
    render_prompt,
    request_body,
)

log = logging.getLogger(__name__)

TieBreak = Literal["fense", "sbert_sim", "none"]
TIE_BREAKS: tuple[str, ...] = get_args(TieBreak)
#: The metric keys each tie-break reads from the evaluator's per-item scores.
TIE_BREAK_PARTS: dict[str, tuple[str, ...]] = {
    "fense": ("sbert_sim", "fer"),
    "sbert_sim": ("sbert_sim",),
    "none": (),
}
CLAIR_A_EPSILON = 1e-4
JUDGE_TEMPERATURE = 0.0  # the authors decode greedily
JUDGE_MAX_TOKENS = 512
DEFAULT_CONFIRM_ABOVE = 500
_HOWTO = (
    "name the judge with --judge-model M [--base-url U] (Python: "
    "clair_a=ClairAConfig(judge_settings('M', base_url='U'))); the key is read from "
    "--api-key-env (OPENAI_API_KEY by default)"
)


def judge_settings(model: str, **options: Any) -> ChatSettings:
    """Chat settings for a CLAIR-A judge: `model` at temperature 0 (greedy, as the authors
    decode) with a 512-token cap, unless `options` (any `ChatSettings` field: `base_url`,
    `api_key_env`, `concurrency`, `rpm`, `timeout_s`, ...) say otherwise."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"--judge-model / model must name the judge model, found {model!r}")
    options.setdefault("temperature", JUDGE_TEMPERATURE)
    options.setdefault("max_tokens", JUDGE_MAX_TOKENS)
    return ChatSettings(model=model, **options)


@dataclass(frozen=True)
class JudgeEstimate:
    """What a run would send, before it sends anything: `items` scored, `cached` answered from
    the cache, `requests` to send (distinct uncached items; re-asks not counted), estimated
    `prompt_tokens` and `completion_tokens` (150 per verdict assumed), and `cost_usd` when
    prices were given."""

    items: int
    cached: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    judge_model: str
    cache: str


@dataclass(frozen=True)
class ClairAConfig:
    """How CLAIR-A is computed (`MetricAssets.clair_a`, `evaluate(..., clair_a=...)`).

    `client`: the judge's endpoint, model and request settings (`judge_settings(model, ...)`).
    `response_format`: `json_schema` (a strict schema, as the authors use), `json_object`, or
    `none` for servers without structured outputs (the verdict is still parsed strictly).
    `max_reasks`: follow-up asks after a reply that is not a verdict. `cache`: the verdict
    cache file (None: `default_cache_path()`). `prices`: per-1M-token prices for the estimate
    and the spent total (None: tokens only). `tie_break` / `epsilon`: see the module docstring.
    `confirm_above`: a run sending more requests than this needs `assume_yes` (None: never).
    `progress(done, total)` is called as verdicts arrive.
    """

    client: ChatSettings
    response_format: ResponseFormat = "json_schema"
    max_reasks: int = 2
    cache: str | Path | None = None
    prices: Prices | None = None
    tie_break: TieBreak = "fense"
    epsilon: float = CLAIR_A_EPSILON
    confirm_above: int | None = DEFAULT_CONFIRM_ABOVE
    assume_yes: bool = False
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.client, ChatSettings):
            raise TypeError(
                f"ClairAConfig.client: expected ChatSettings (judge_settings(...)), found "
                f"{type(self.client).__name__}"
            )
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(
                f"--response-format / response_format must be one of "
                f"{', '.join(RESPONSE_FORMATS)}, found {self.response_format!r}"
            )
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(
                f"--tie-break / tie_break must be one of {', '.join(TIE_BREAKS)}, found "
                f"{self.tie_break!r}"
            )
        if not (isinstance(self.max_reasks, int) and self.max_reasks >= 0):
            raise ValueError(
                f"--content-retries / max_reasks must be >= 0, found {self.max_reasks!r}"
            )
        if not (math.isfinite(self.epsilon) and 0 <= self.epsilon < 1):
            raise ValueError(f"epsilon must be in [0, 1), found {self.epsilon!r}")
        if self.confirm_above is not None and self.confirm_above < 0:
            raise ValueError(
                f"--confirm-above / confirm_above must be >= 0, found {self.confirm_above!r}"
            )

    @property
    def cache_path(self) -> Path:
        return Path(self.cache) if self.cache is not None else default_cache_path()


def judge_ready(config: ClairAConfig | None) -> None:
    """Raise `AssetNotFoundError` saying what is missing for CLAIR-A to run (no judge named,
    the `openai` package, the key variable unset or unusable); cheap, sends nothing."""
    import importlib.util

    if config is None:
        raise AssetNotFoundError(f"no judge model given for clair_a: {_HOWTO}")
    if importlib.util.find_spec("openai") is None:
        raise AssetNotFoundError("Python package openai not installed (pip install openai)")
    try:
        config.client.api_key()
    except BackendConfigError as err:
        raise AssetNotFoundError(f"clair_a's judge: {err}") from None


class JudgeConfirmationNeeded(ValueError):
    """A run larger than `confirm_above` requests without `assume_yes` (exit 2 in the CLI)."""


@dataclass
class ClairAScores:
    """One run's result: `per_item` values (NaN where the item failed), `corpus` their mean
    over judged items (None when none was), `details` per item (`score`, `reason`,
    `tie_break`, `cached`, `error`), and `settings` (what produced them and what it cost)."""

    per_item: list[float]
    corpus: float | None
    details: list[dict[str, Any]]
    settings: dict[str, Any]

    @property
    def failed(self) -> int:
        return sum(d["error"] is not None for d in self.details)


@dataclass
class _Item:
    key: str
    candidate: str
    references: list[str]
    outcome: Verdict | str | None = None  # a verdict, or why there is none
    cached: bool = False


class ClairAJudge:
    """Scores caption sets with one judge. `tie_break_missing`: why the configured tie-break
    cannot be computed here (then it is left out and the settings say so)."""

    def __init__(self, config: ClairAConfig, tie_break_missing: str | None = None) -> None:
        self.config = config
        self.tie_break = "none" if tie_break_missing else config.tie_break
        self.tie_break_missing = tie_break_missing

    @property
    def tie_break_parts(self) -> tuple[str, ...]:
        """The per-item metrics this judge's tie-break reads (to be computed beside it)."""
        return TIE_BREAK_PARTS[self.tie_break]

    def _items(
        self, candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
    ) -> tuple[list[str], dict[str, _Item]]:
        model = self.config.client.model
        keys, unique = [], {}
        for cand, refs in zip(candidates, mult_references, strict=True):
            key = verdict_key(cand, list(refs), model, PROMPT_VERSION)
            keys.append(key)
            unique.setdefault(key, _Item(key, cand, list(refs)))
        return keys, unique

    def estimate(
        self, candidates: Sequence[str], mult_references: Sequence[Sequence[str]]
    ) -> JudgeEstimate:
        """What scoring these items would send (reads the cache; sends nothing)."""
        keys, unique = self._items(candidates, mult_references)
        with VerdictCache(self.config.cache_path) as cache:
            cached = cache.get_many(list(unique))
        return self._estimate(keys, unique, cached)

    def _estimate(
        self, keys: list[str], unique: dict[str, _Item], cached: dict[str, Verdict]
    ) -> JudgeEstimate:
        todo = [item for key, item in unique.items() if key not in cached]
        prompt = round(
            sum(
                prompt_tokens(
                    [{"content": render_prompt(i.candidate, i.references)}],
                    self.config.response_format,
                )
                for i in todo
            )
        )
        completion = ASSUMED_REPLY_TOKENS * len(todo)
        prices = self.config.prices
        return JudgeEstimate(
            items=len(keys),
            cached=sum(key in cached for key in keys),
            requests=len(todo),
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=prices.cost(prompt, completion) if prices is not None else None,
            judge_model=self.config.client.model,
            cache=str(self.config.cache_path),
        )

    def score(
        self,
        candidates: Sequence[str],
        mult_references: Sequence[Sequence[str]],
        per_item: dict[str, list[float]] | None = None,
    ) -> ClairAScores:
        """Judge every item (cached verdicts first), then combine with the tie-break read from
        `per_item` (the evaluator's per-item `fense` or `sbert_sim`)."""
        keys, unique = self._items(candidates, mult_references)
        with VerdictCache(self.config.cache_path) as cache:
            cached = cache.get_many(list(unique))
            estimate = self._estimate(keys, unique, cached)
            log.info("clair_a: %s", estimate)
            limit = self.config.confirm_above
            if limit is not None and estimate.requests > limit and not self.config.assume_yes:
                raise JudgeConfirmationNeeded(
                    f"clair_a would send {estimate.requests:,} judge requests to "
                    f"{estimate.judge_model!r} (about {estimate.prompt_tokens:,} prompt and "
                    f"{estimate.completion_tokens:,} completion tokens"
                    + (f", {dollars(estimate.cost_usd)}" if estimate.cost_usd is not None else "")
                    + f"), more than --confirm-above {limit}; pass --yes (assume_yes=True) to go "
                    "ahead, or --dry-run to see the estimate only"
                )
            for key, verdict in cached.items():
                unique[key].outcome, unique[key].cached = verdict, True
            stats = RunStats()
            todo = [item for item in unique.values() if item.outcome is None]
            reasks = [0]
            if todo:
                _run(self._judge_all(todo, cache, stats, reasks))
        return self._combine(keys, unique, per_item or {}, estimate, stats, reasks[0])

    async def _judge_all(
        self, todo: list[_Item], cache: VerdictCache, stats: RunStats, reasks: list[int]
    ) -> None:
        client = ChatClient(self.config.client, stats, unit="item")
        done = 0
        tasks = [asyncio.create_task(self._judge_one(client, item, reasks)) for item in todo]
        try:
            for next_done in asyncio.as_completed(tasks):
                item, usage = await next_done
                if isinstance(item.outcome, Verdict):
                    cache.put(
                        item.key,
                        self.config.client.model,
                        PROMPT_VERSION,
                        item.candidate,
                        item.references,
                        item.outcome,
                        usage,
                    )
                done += 1
                if self.config.progress is not None:
                    self.config.progress(done, len(todo))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()

    async def _judge_one(
        self, client: ChatClient, item: _Item, reasks: list[int]
    ) -> tuple[_Item, tuple[int, int]]:
        """Ask, and re-ask after a reply that is not a verdict; `item.outcome` is the verdict
        or the reason there is none. Returns the item and the tokens it cost."""
        config = self.config
        messages = [{"role": "user", "content": render_prompt(item.candidate, item.references)}]
        used = [0, 0]
        problem = ""
        for ask in range(config.max_reasks + 1):
            if ask:
                reasks[0] += 1
            body = request_body(config.client, messages, config.response_format)
            guard = UsageGuard(
                prompt_tokens(messages, config.response_format), config.client.max_tokens
            )
            try:
                completion = await client.post(body, guard)
            except RequestFailed as err:
                item.outcome = f"request failed: {err.reason}" + _format_hint(err.reason, config)
                return item, (used[0], used[1])
            used[0] += completion.prompt_tokens
            used[1] += completion.completion_tokens
            client.stats.prompt_tokens += completion.prompt_tokens
            client.stats.completion_tokens += completion.completion_tokens
            if config.prices is not None:
                client.stats.cost_usd += config.prices.cost(
                    completion.prompt_tokens, completion.completion_tokens
                )
            if completion.refusal:
                problem = f"the judge refused ({completion.refusal[:200]!r})"
                said = completion.refusal
            else:
                try:
                    item.outcome = parse_verdict(completion.text)
                    return item, (used[0], used[1])
                except VerdictError as err:
                    problem = err.problem
                    if completion.finish_reason == "length":
                        problem += " (the reply was cut at the token cap, --max-tokens)"
                said = completion.text or ""
            messages += [
                {"role": "assistant", "content": said},
                {"role": "user", "content": reask(problem)},
            ]
        item.outcome = f"no verdict after {config.max_reasks + 1} asks: {problem}"
        return item, (used[0], used[1])

    def _combine(
        self,
        keys: list[str],
        unique: dict[str, _Item],
        per_item: dict[str, list[float]],
        estimate: JudgeEstimate,
        stats: RunStats,
        reasks: int,
    ) -> ClairAScores:
        tie_break, missing = self.tie_break, self.tie_break_missing
        tie_key = None if tie_break == "none" else tie_break
        tie_values = per_item.get(tie_key) if tie_key else None
        if tie_key and tie_values is None:
            tie_break, missing = "none", f"{tie_key} was not computed for these items"
        eps = self.config.epsilon if tie_values is not None else 0.0
        values, details = [], []
        for i, key in enumerate(keys):
            item = unique[key]
            tie = float(tie_values[i]) if tie_values is not None else None
            if isinstance(item.outcome, Verdict):
                score = item.outcome.score
                values.append((1 - eps) * score / 100 + eps * (tie or 0.0))
                details.append(
                    {
                        "score": score,
                        "reason": item.outcome.reason,
                        "tie_break": tie,
                        "cached": item.cached,
                        "error": None,
                    }
                )
            else:
                values.append(math.nan)
                details.append(
                    {
                        "score": None,
                        "reason": None,
                        "tie_break": tie,
                        "cached": False,
                        "error": item.outcome or "not judged",
                    }
                )
        judged = [v for v in values if not math.isnan(v)]
        settings: dict[str, Any] = {
            "judge_model": self.config.client.model,
            "prompt_version": PROMPT_VERSION,
            "response_format": self.config.response_format,
            "temperature": self.config.client.temperature,
            "tie_break": tie_break,
            "epsilon": eps,
            "items": len(keys),
            "cached": estimate.cached,
            "failed": sum(d["error"] is not None for d in details),
            "requests": stats.requests,
            "retries": stats.retries,
            "reasks": reasks,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "cache": str(self.config.cache_path),
        }
        if missing:
            settings["tie_break_missing"] = missing
        if self.config.prices is not None:
            settings["cost_usd"] = round(stats.cost_usd, 6)
        corpus = sum(judged) / len(judged) if judged else None
        return ClairAScores(values, corpus, details, settings)


def _format_hint(reason: str, config: ClairAConfig) -> str:
    """A 400 from an endpoint asked for a response format is most often one that has none."""
    if reason.startswith("HTTP 400") and config.response_format != "none":
        return (
            f" (does the endpoint support response_format {config.response_format}? If not, "
            "try --response-format none)"
        )
    return ""


def _run(coroutine: Any) -> None:
    """Run `coroutine` to its end from synchronous code, also when the caller is already
    inside an event loop (a notebook): then in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coroutine)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()
