"""The verdict cache: one SQLite file of the judge's verdicts, so a re-run costs nothing.

A verdict is keyed by (candidate, references in their order, judge model, prompt version): the
SHA-256 of those four as JSON. Same key, same request, so its verdict is reused and no request
is sent. The references' order is part of the key because it is part of the prompt. Only
verdicts are kept (a failed item is asked again next run), each written as soon as it arrives
(a killed run keeps what it paid for), with the tokens it cost. The file holds captions, scores,
reasons and token counts: never the key, the endpoint or a request header.

The model name is trusted: two endpoints serving different models under one name share
verdicts, so give such runs different cache files (`cache=` / `--judge-cache`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from multi2cap.metrics.clair_a.prompt import Verdict

JUDGE_CACHE_ENV = "MULTI2CAP_JUDGE_CACHE"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    key TEXT PRIMARY KEY,
    judge_model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    candidate TEXT NOT NULL,
    mult_references TEXT NOT NULL,
    score INTEGER NOT NULL,
    reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created_at TEXT NOT NULL
)
"""


def default_cache_path() -> Path:
    """`$MULTI2CAP_JUDGE_CACHE`, else `clair_a.sqlite` in the user's cache folder
    (`$XDG_CACHE_HOME/multi2cap`, else `~/.cache/multi2cap`)."""
    named = os.environ.get(JUDGE_CACHE_ENV)
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multi2cap" / "clair_a.sqlite"


def verdict_key(candidate: str, references: list[str], judge_model: str, version: str) -> str:
    """The cache key of one judge request (hex SHA-256)."""
    text = json.dumps([candidate, list(references), judge_model, version], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class VerdictCache:
    """The SQLite file at `path` (created with its folder when missing). A file that is not
    such a cache raises `ValueError` naming it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(os.fspath(self.path), timeout=30.0, isolation_level=None)
            self._conn.execute(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as err:
            raise ValueError(
                f"judge cache {self.path}: cannot be opened as a verdict cache ({err}); name "
                f"another file with --judge-cache / cache= or {JUDGE_CACHE_ENV}"
            ) from None

    def get_many(self, keys: list[str]) -> dict[str, Verdict]:
        """The cached verdicts among `keys`."""
        found: dict[str, Verdict] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 500]
            rows = self._conn.execute(
                f"SELECT key, score, reason FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({key: Verdict(score, reason) for key, score, reason in rows})
        return found

    def put(
        self,
        key: str,
        judge_model: str,
        version: str,
        candidate: str,
        references: list[str],
        verdict: Verdict,
        usage: tuple[int, int],
    ) -> None:
        """Keep one verdict (committed at once) with the (prompt, completion) tokens it cost."""
        self._conn.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                judge_model,
                version,
                candidate,
                json.dumps(list(references), ensure_ascii=False),
                verdict.score,
                verdict.reason,
                usage[0],
                usage[1],
                datetime.now(UTC).isoformat(timespec="seconds"),
            ),
        )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> VerdictCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
