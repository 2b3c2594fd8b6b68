"""A CLAIR-A judge behind the tests' loopback OpenAI server (`tests/vggcaps/openai_loopback.py`).

`judge_answer` answers a judge request deterministically: the score is the share of the
candidate's words found in the references (x100, rounded), the reason says so. It checks what
the judge sends (text messages only, CLAIR-A's prompt first, re-asks after it) into
`state.problems` and records each request (candidate, references, number of messages,
response format, temperature) in `state.requests`.

Content faults, from the server's fault queue (the transport faults, "429", "timeout",
"malformed", ..., stay the server's own): "bad-json" (prose, no JSON), "out-of-range"
(score 150), "float-score", "extra-key", "refusal" (no content, a refusal), "fenced" (the verdict
in a ```json fence: accepted), "cut" (half a verdict, `finish_reason: length`). The queue is
shared by concurrent requests, so a test of several items marks the one to fail instead: a
candidate holding "(refuse)" is always refused, one holding "(error)" always gets HTTP 500.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from openai_loopback import LoopbackServer, ServerState

PROMPT_START = "You are tasked with evaluating if a set of candidate captions"
_ITEMS = re.compile(r"Candidate set:\n(.*?)\n\nReference set:\n(.*?)\n\nCombine", re.DOTALL)


def _listed(block: str) -> list[str]:
    return [line[2:] for line in block.splitlines() if line.startswith("- ")]


def expected_score(candidate: str, references: list[str]) -> int:
    """The loopback judge's score: the share of candidate words found in the references."""
    words = candidate.lower().split()
    known = {w for r in references for w in r.lower().split()}
    return round(100 * sum(w in known for w in words) / max(1, len(words)))


def judge_answer(state: ServerState, body: dict[str, Any], fault: str | None) -> tuple[int, Any]:
    messages = body.get("messages") or []
    if not messages or any(not isinstance(m.get("content"), str) for m in messages):
        state.problems.append(f"judge messages are not text: {messages!r:.200}")
        return 400, {"error": {"message": "bad messages"}}
    prompt = messages[0]["content"]
    match = _ITEMS.search(prompt)
    if not prompt.startswith(PROMPT_START) or match is None:
        state.problems.append(f"not CLAIR-A's prompt: {prompt[:80]!r}")
        return 400, {"error": {"message": "unknown prompt"}}
    if len(messages) > 1 and not messages[-1]["content"].startswith("Your reply could not be"):
        state.problems.append(f"the last message is no re-ask: {messages[-1]!r:.200}")
    candidate, references = _listed(match.group(1))[0], _listed(match.group(2))
    with state.lock:
        state.requests.append(
            {
                "candidate": candidate,
                "references": references,
                "messages": len(messages),
                "last": messages[-1]["content"],
                "response_format": body.get("response_format"),
                "temperature": body.get("temperature"),
            }
        )
    if "(error)" in candidate:
        return 500, {"error": {"message": "boom"}}
    if "(refuse)" in candidate:
        fault = "refusal"
    score = expected_score(candidate, references)
    verdict = {"score": score, "reason": f"{score}% of the candidate's words are in the references"}
    content: str | None = json.dumps(verdict)
    message: dict[str, Any] = {"role": "assistant", "refusal": None}
    finish = "stop"
    if fault == "bad-json":
        content = f"I would rate this {score} out of 100."
    elif fault == "out-of-range":
        content = json.dumps({"score": 150, "reason": "very good"})
    elif fault == "float-score":
        content = json.dumps({"score": 80.5, "reason": "good"})
    elif fault == "extra-key":
        content = json.dumps({**verdict, "confidence": 0.9})
    elif fault == "refusal":
        content, message["refusal"] = None, "I'm sorry, I can't help with that."
    elif fault == "fenced":
        content = f"```json\n{content}\n```"
    elif fault == "cut":
        content, finish = content[: len(content) // 2], "length"
    message["content"] = content
    chars = sum(len(m["content"]) for m in messages)
    usage = {"prompt_tokens": chars // 4, "completion_tokens": len(content or "") // 4 + 1}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return 200, {
        "id": "chatcmpl-judge",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "?"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def judge_server(api_key: str) -> LoopbackServer:
    """A loopback server answering as the judge (use it in a `with`)."""
    server = LoopbackServer(api_key)
    server.state.answer = judge_answer
    return server
