"""METEOR process handling that needs no loaded JVM: a dead JVM gives an error, not a hang."""

from __future__ import annotations

import pytest

from multi2cap.metrics.meteor import MeteorScorer, _clean


def test_protocol_separators_and_line_breaks_are_removed() -> None:
    assert _clean("a ||| b\nc\r\nd  e") == "a b c d e"


def test_a_dead_jvm_raises_with_its_stderr(java: str) -> None:
    scorer = MeteorScorer(java=java)
    process = scorer._proc
    assert process is not None
    process.kill()
    process.wait()
    with pytest.raises(RuntimeError, match="METEOR jar exited"):
        scorer.score(["a dog"], [["a dog barks"]])
    with pytest.raises(RuntimeError, match="closed"):
        scorer.score(["a dog"], [["a dog barks"]])
    scorer.close()  # idempotent
