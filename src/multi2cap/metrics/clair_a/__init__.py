"""CLAIR-A (Wu et al. 2024, arXiv 2409.12962): an LLM judge's 0-100 score of a candidate caption
against its references, with a reason, as the `clair_a` metric.

`judge.py` runs it (requests through `multi2cap.llm_client`, re-asks, the FENSE tie-break),
`prompt.py` holds the published prompt and the strict reading of the verdict, `cache.py` keeps
verdicts so a re-run costs nothing. See docs/metrics.md (CLAIR-A) for cost and when to use it.
"""

from multi2cap.metrics.clair_a.cache import JUDGE_CACHE_ENV, VerdictCache, default_cache_path
from multi2cap.metrics.clair_a.judge import (
    TIE_BREAKS,
    ClairAConfig,
    ClairAJudge,
    ClairAScores,
    JudgeConfirmationNeeded,
    JudgeEstimate,
    judge_ready,
    judge_settings,
)
from multi2cap.metrics.clair_a.prompt import (
    PROMPT_VERSION,
    RESPONSE_FORMATS,
    Verdict,
    VerdictError,
    parse_verdict,
    render_prompt,
)

__all__ = [
    "JUDGE_CACHE_ENV",
    "PROMPT_VERSION",
    "RESPONSE_FORMATS",
    "TIE_BREAKS",
    "ClairAConfig",
    "ClairAJudge",
    "ClairAScores",
    "JudgeConfirmationNeeded",
    "JudgeEstimate",
    "Verdict",
    "VerdictCache",
    "VerdictError",
    "default_cache_path",
    "judge_ready",
    "judge_settings",
    "parse_verdict",
    "render_prompt",
]
