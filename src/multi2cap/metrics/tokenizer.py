"""PTB tokenization exactly as coco-caption (and aac-metrics) do it before scoring.

coco-caption runs Stanford CoreNLP 3.4.1 `PTBTokenizer -preserveLines -lowerCase` over one caption
per line and drops the punctuation tokens in `PTB_PUNCTUATION`. Because that list holds the
upper-case bracket tokens while `-lowerCase` emits lower-case ones, parentheses survive as the
tokens `-lrb-`/`-rrb-`: every published number carries this quirk, so we keep it.

The jar ships in the `pycocoevalcap` wheel; we run it on stdin from a temporary working folder
(pycocoevalcap's wrapper writes into site-packages). Without Java, a pure-Python approximation is
used with a warning; it agrees with the jar on ordinary captions (see docs/metrics.md for the
cases it does not cover).
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from multi2cap.assets import AssetNotFoundError, java_executable
from multi2cap.metrics.resources import coco_jars

log = logging.getLogger(__name__)

PTB_PUNCTUATION = frozenset(
    [
        "''",
        "'",
        "``",
        "`",
        "-LRB-",
        "-RRB-",
        "-LCB-",
        "-RCB-",
        ".",
        "?",
        "!",
        ",",
        ":",
        "-",
        "--",
        "...",
        ";",
    ]
)

# Characters the jar treats as a line end. One inside a caption would shift every later caption
# onto the wrong item, so they become spaces first (coco-caption only replaces "\n").
_LINE_BREAKS = re.compile("[\n\r\v\f\u2028\u2029]")
_TIMEOUT_S = 600.0


def _filter(line: str) -> str:
    return " ".join(w for w in line.split() if w not in PTB_PUNCTUATION)


def ptb_tokenize_java(sentences: Sequence[str], java: str | Path | None = None) -> list[str]:
    """Tokenize with the CoreNLP 3.4.1 jar (one JVM start, about 0.3-0.7 s).

    Raises `AssetNotFoundError` if Java or the jar is missing, `RuntimeError` if the jar fails.
    """
    if not sentences:
        return []
    java_path = str(java) if java is not None else str(java_executable())
    if not Path(java_path).is_file():
        raise AssetNotFoundError(f"java executable {java_path} not found")
    jar = coco_jars().ptb_tokenizer
    text = "\n".join(_LINE_BREAKS.sub(" ", s) for s in sentences)
    cmd = [
        java_path,
        "-Dfile.encoding=UTF-8",
        "-cp",
        str(jar),
        "edu.stanford.nlp.process.PTBTokenizer",
        "-preserveLines",
        "-lowerCase",
        "-encoding",
        "utf-8",
    ]
    with tempfile.TemporaryDirectory(prefix="multi2cap-ptb-") as workdir:
        proc = subprocess.run(
            cmd,
            input=text.encode("utf-8"),
            capture_output=True,
            cwd=workdir,
            timeout=_TIMEOUT_S,
            check=False,
        )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"PTB tokenizer failed (exit {proc.returncode}): {tail}")
    lines = proc.stdout.decode("utf-8").split("\n")
    # The jar keeps one output line per input line; trailing empty captions may come back as
    # missing or extra empty lines, anything else means the alignment broke.
    n_trailing_empty = next(
        (i for i, s in enumerate(reversed(sentences)) if s.strip()), len(sentences)
    )
    if any(lines[len(sentences) :]) or len(lines) < len(sentences) - n_trailing_empty:
        raise RuntimeError(
            f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions"
        )
    lines += [""] * (len(sentences) - len(lines))
    return [_filter(line) for line in lines[: len(sentences)]]


# Pure-Python approximation of PTBTokenizer for the ordinary English of captions.
_CONTRACTIONS = re.compile(r"(?i)(\w)('s|'re|'ve|'ll|'d|'m|n't)\b")
_SPLIT_PUNCT = re.compile(r"([,;:!?()\[\]{}]|\.\.\.|--)")
_CLITICS = frozenset(("'s", "'re", "'ve", "'ll", "'d", "'m", "n't"))
_ABBREVIATION = re.compile(r"^(?:[a-z]\.)+$|^(?:mr|mrs|ms|dr|st|vs|etc|jr|sr)\.$")


def ptb_tokenize_python(sentences: Sequence[str]) -> list[str]:
    """Approximate the jar without Java: lower-case, split contractions (`'s`, `n't`, ...) and
    punctuation, keep intra-word hyphens and decimals, map parentheses to `-lrb-`/`-rrb-`, then
    apply the same punctuation filter."""
    out = []
    for sentence in sentences:
        text = _LINE_BREAKS.sub(" ", sentence).lower()
        text = _CONTRACTIONS.sub(r"\1 \2", text).replace("\u2014", " -- ").replace("\u2013", " -- ")
        text = _SPLIT_PUNCT.sub(r" \1 ", text)
        tokens: list[str] = []
        for word in text.split():
            if word in ("(", "["):
                tokens.append("-lrb-" if word == "(" else "-lsb-")
            elif word in (")", "]"):
                tokens.append("-rrb-" if word == ")" else "-rsb-")
            elif word == "{":
                tokens.append("-lcb-")
            elif word == "}":
                tokens.append("-rcb-")
            elif word in _CLITICS:
                tokens.append(word)
            else:
                # Quotes around a word are separate (and filtered) tokens in PTB.
                word = word.strip("'\"`")
                if word.endswith(".") and len(word) > 1 and not _ABBREVIATION.match(word):
                    word = word.rstrip(".")
                if word:
                    tokens.append(word)
        out.append(_filter(" ".join(tokens)))
    return out


def ptb_tokenize(
    sentences: Sequence[str], java: str | Path | None = None, backend: str = "auto"
) -> tuple[list[str], str]:
    """Tokenize captions for scoring; returns (tokenized, backend used: "java" or "python").

    `backend="auto"` uses the jar and falls back to Python (with a warning) only when Java or
    the jar is missing; "java" or "python" force one.
    """
    if backend == "python":
        return ptb_tokenize_python(sentences), "python"
    try:
        return ptb_tokenize_java(sentences, java), "java"
    except AssetNotFoundError as err:
        if backend == "java":
            raise
        log.warning("PTB tokenizer jar unusable (%s); using the pure-Python fallback", err)
        return ptb_tokenize_python(sentences), "python"
