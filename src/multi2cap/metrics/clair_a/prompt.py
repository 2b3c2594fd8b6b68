"""CLAIR-A's prompt, the request that carries it, and the strict reading of the judge's verdict.

The prompt is CLAIR-A's published one, word for word (Wu, Gonzalez, Darrell, Chan, "CLAIR-A:
Leveraging Large Language Models to Judge Audio Captions", arXiv 2409.12962; the text of
`_CLAIRA_PROMPT` in the authors' `clair_a.py`, repository DavidMChan/clair-a, commit 39e2151):
0-90 points for how accurately the audio is described, 0-10 for grammar and detail, a JSON reply
`{"score": 0-100, "reason": "..."}`. Candidates and references are listed one per line as
`- caption`, as the authors format them. The authors force the JSON shape with structured
generation (outlines; for OpenAI a strict `json_schema` response format with `score: int`,
`reason: str` and no other key) and greedy decoding; `response_format="json_schema"` and the
judge's temperature 0 do the same here, and `parse_verdict` accepts exactly that shape, so a
server without structured outputs (`response_format="none"`) is held to it by re-asking.

`PROMPT_VERSION` names the prompt and ends with a hash of the texts sent (prompt, re-ask and
schema): the verdict cache is keyed by it, so a changed text never reuses old verdicts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from multi2cap.llm_client.prices import CHARS_PER_TOKEN
from multi2cap.llm_client.settings import ChatSettings

ResponseFormat = Literal["json_schema", "json_object", "none"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

# CLAIR-A's prompt, quoted from the authors' code (see the module docstring): keep it verbatim.
PROMPT_TEMPLATE = """\
You are tasked with evaluating if a set of candidate captions accurately describes the same sound in a video clip as a reference set of captions. Start by assessing the accuracy and precision of how the audio characteristics are captured in the captions, scoring from 0 to 90 based on this aspect alone. After this initial assessment, you may add additional points (from 0 to 10) based on the quality of grammar and the detailed, reasonable descriptions present in the captions.

Candidate set:
{candidate_statements}

Reference set:
{target_statements}

Combine these two aspects for a final evaluation score on a scale from 0 to 100, reflecting the likelihood that the candidate set is describing the same sound as the reference set. Format your response in JSON with a key "score", value between 0 and 100, and a key "reason" with a string value explaining your assessment.
"""

# Ours: what the judge is told after a reply that could not be read.
REASK_TEMPLATE = (
    "Your reply could not be read: {problem}. Reply again with only a JSON object with exactly "
    'two keys: "score" (an integer from 0 to 100) and "reason" (a string explaining your '
    "assessment)."
)

#: The JSON schema of a verdict (the authors' OpenAI response model: `score: int`,
#: `reason: str`, no other key), sent as a strict `json_schema` response format.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}
_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "clair_a_verdict", "strict": True, "schema": VERDICT_SCHEMA},
}
_TEXTS_SENT = json.dumps([PROMPT_TEMPLATE, REASK_TEMPLATE, VERDICT_SCHEMA], sort_keys=True)
PROMPT_VERSION = "clair-a-v1-" + hashlib.sha256(_TEXTS_SENT.encode()).hexdigest()[:8]
#: Reply tokens assumed per verdict in estimates: the authors' README example reason is about
#: 560 characters (140 tokens), plus the JSON around it.
ASSUMED_REPLY_TOKENS = 150
#: Tokens of chat framing per message (role and separators), as OpenAI counts them.
MESSAGE_OVERHEAD_TOKENS = 4


class VerdictError(ValueError):
    """A reply that is not a verdict; `problem` says what was wrong (it is sent back to the
    judge in the re-ask, and recorded when the re-asks are spent)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Verdict:
    """The judge's answer: `score` an integer in [0, 100], `reason` its explanation."""

    score: int
    reason: str


def render_prompt(candidate: str, references: list[str]) -> str:
    """CLAIR-A's prompt for one candidate and its references, each listed as `- caption`."""
    return PROMPT_TEMPLATE.format(
        candidate_statements=f"- {candidate}\n",
        target_statements="".join(f"- {reference}\n" for reference in references),
    )


def reask(problem: str) -> str:
    """The follow-up message after a reply that could not be read."""
    return REASK_TEMPLATE.format(problem=problem)


def request_body(
    settings: ChatSettings, messages: list[dict[str, str]], response_format: ResponseFormat
) -> dict[str, Any]:
    """The Chat Completions body of one judge request: text messages only, the verdict's
    response format, and the settings' temperature and token cap."""
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if response_format == "json_schema":
        body["response_format"] = _SCHEMA_FORMAT
    elif response_format == "json_object":
        body["response_format"] = {"type": "json_object"}
    body.update(settings.sampling_fields())
    return body


def prompt_tokens(messages: list[dict[str, str]], response_format: ResponseFormat) -> float:
    """Estimated prompt tokens of a request (characters / 4, framing, and the schema when it is
    sent): what the builder's estimates use, no tokenizer needed."""
    chars = sum(len(m["content"]) for m in messages)
    if response_format == "json_schema":
        chars += len(json.dumps(_SCHEMA_FORMAT))
    return chars / CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * len(messages)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise VerdictError(f"the JSON object repeats the key(s) {', '.join(repeated)}")
    return dict(pairs)


def _unfenced(text: str) -> str:
    """The text inside one Markdown code fence (```json ... ```) around the whole reply, else
    the text itself: the one wrapper tolerated, as models without structured outputs add it."""
    if text.startswith("```") and text.endswith("```") and text.count("```") == 2:
        inner = text[3:-3]
        first, _, rest = inner.partition("\n")
        return (rest if first.strip().lower() in ("", "json") else inner).strip()
    return text


def parse_verdict(text: str | None) -> Verdict:
    """The verdict in a reply, read strictly: one JSON object (a single Markdown code fence
    around it is removed), exactly the keys `score` and `reason`, `score` an integer from 0 to
    100 (not a float, not a boolean, not a string), `reason` a non-empty string. Anything else
    raises `VerdictError` saying what was wrong."""
    if text is None or not text.strip():
        raise VerdictError("the reply was empty")
    body = _unfenced(text.strip())
    try:
        value = json.loads(body, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise VerdictError(f"it is not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(value, dict):
        raise VerdictError(f"it is a JSON {type(value).__name__}, not an object")
    if set(value) != {"score", "reason"}:
        raise VerdictError(
            f'expected exactly the keys "score" and "reason", found {sorted(value) or "none"}'
        )
    score, reason = value["score"], value["reason"]
    if isinstance(score, bool) or not isinstance(score, int):
        raise VerdictError(f'"score" must be an integer, found {json.dumps(score)[:40]}')
    if not 0 <= score <= 100:
        raise VerdictError(f'"score" must be from 0 to 100, found {score}')
    if not isinstance(reason, str) or not reason.strip():
        raise VerdictError('"reason" must be a non-empty string')
    return Verdict(score=score, reason=reason.strip())
