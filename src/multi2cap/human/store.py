"""The study database (`STUDY/study.sqlite`): schema, and every question and answer the app asks.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk before it returns, readers (the
`status` and `export` commands) never block the server, and the server is the only writer.
`StudyStore` runs its statements on a connection it does not commit: the caller (the app's
`StoreWorker`, or a CLI command) owns the transaction, so an answer and the reply built from it
are one atomic unit.

Kinds (`StudyKind`): `mos` (the dataset's captions rated 1-5), `captions` (raters write captions,
two stages), `system-mos` (systems' captions rated 1-5, one item per clip and system) and `ab`
(which of two systems' captions describes the clip better; sides shown in a per-rater random
order, `assignments.swapped`).

Tables: `meta` (the study's settings as JSON), `items` (the sampled clips and gold items; for
`system-mos` one row per clip and `system`, for `ab` the two systems' captions in `caption` and
`caption_b`),
`raters` (names, token digests, and how many of their items are finished: answers come strictly
in order, so the current item is the one at position `done + 1`, one index look-up however far
the rater is), `assignments` (a rater's items in their order, each under an
opaque `key` that the browser sees instead of the dataset id), `answers` (one row per assignment
and stage: stage 0 = a MOS score or an A/B `choice` as shown, "A", "B" or "tie"; 1 = the
audio-only caption, 2 = the caption with the frame), `sessions` (browser sessions, rater or
admin, with their CSRF token). Schema 1 (multi2cap 0.2) lacks `items.system`,
`items.caption_b`, `assignments.swapped` and `answers.choice`: `open_study_db` adds them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from multi2cap.fsnames import printable
from multi2cap.human.security import match_token, new_token, token_digest

StudyKind = Literal["mos", "captions", "system-mos", "ab"]
STUDY_KINDS: tuple[StudyKind, ...] = get_args(StudyKind)
#: What the rater's page shows for each kind: a system-MOS item looks exactly like a MOS item.
PAGE_MODES: dict[StudyKind, str] = {
    "mos": "mos",
    "system-mos": "mos",
    "captions": "captions",
    "ab": "ab",
}
DB_NAME = "study.sqlite"
#: Bumped when the tables change; a study of another version is refused with a clear message
#: (schema 1 is brought to 2 in place: `migrate`).
SCHEMA_VERSION = "2"
MOS_STAGE = 0
#: An A/B answer as the rater gave it: the caption shown first, second, or no preference.
CHOICES = ("A", "B", "tie")
CAPTION_MAX_CHARS = 500
SCORE_RANGE = (1, 5)
#: A gold item (a caption of another clip) is failed when rated above this.
GOLD_MAX_SCORE = 2
#: An answer counts only after this fraction of the clip's duration has passed since it was shown.
LISTEN_FRACTION = 0.9
_KEY = re.compile(r"^[0-9a-f]{16}$")
#: Rater and system names: safe in a file name, a CSV cell and a URL.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    item TEXT NOT NULL,
    audio TEXT NOT NULL,
    frame TEXT,
    caption TEXT,
    refs TEXT NOT NULL DEFAULT '[]',
    duration_s REAL NOT NULL,
    gold INTEGER NOT NULL DEFAULT 0,
    gold_source TEXT,
    system TEXT NOT NULL DEFAULT '',
    caption_b TEXT,
    UNIQUE (item, system)
);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 BLOB NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    key TEXT NOT NULL UNIQUE,
    shown_at REAL,
    swapped INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rater_id, position),
    UNIQUE (rater_id, item_id)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    assignment_id INTEGER NOT NULL REFERENCES assignments(id),
    stage INTEGER NOT NULL,
    score INTEGER,
    caption TEXT,
    choice TEXT,
    shown_at REAL NOT NULL,
    answered_at REAL NOT NULL,
    UNIQUE (assignment_id, stage)
);
CREATE TABLE IF NOT EXISTS sessions (
    sid_sha256 BLOB PRIMARY KEY,
    rater_id INTEGER REFERENCES raters(id),
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


class StudyError(Exception):
    """A request the study refuses: `status` is the HTTP code, the message says why and what next."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    """A browser session: a rater's (`rater_id` set) or the admin's (`rater_id` None)."""

    rater_id: int | None
    csrf: str


@dataclass(frozen=True)
class RaterProgress:
    """One rater's progress: answers given (`done`) out of `total`, gold items failed."""

    name: str
    done: int
    total: int
    gold_done: int
    gold_failed: int
    last_answer_at: float | None


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (the caller issues BEGIN/COMMIT), WAL, synchronous FULL."""
    if readonly:
        conn = sqlite3.connect(
            f"file:{Path(path).resolve()}?mode=ro", uri=True, isolation_level=None
        )
    else:
        conn = sqlite3.connect(os.fspath(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.row_factory = sqlite3.Row
    return conn


class StudyDatabaseError(ValueError):
    """`study.sqlite` is damaged or no SQLite database at all (SQLite's own error names no
    file); the CLI exits 2 with this message (bad input, README)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{printable(path)}: not a readable study database ({problem}); restore the file "
            "from a backup (docs/human.md), or move it away and create the study again"
        )
        self.path = path


# SQLite's primary result codes for a damaged file and for a file that is no database.
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def open_study_db(study: str | os.PathLike[str], *, readonly: bool = False) -> sqlite3.Connection:
    """Connect to `STUDY/study.sqlite`, with a clear error when the folder is not a study
    (`FileNotFoundError`) or its database is damaged (`StudyDatabaseError`: SQLite's
    `quick_check` runs first, a linear scan that takes milliseconds on a study's few MB); a
    schema-1 study is then brought to the current schema (`migrate`)."""
    path = Path(study) / DB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{study} is not a study folder (no {DB_NAME}); run `human create`")
    _check_integrity(path)
    migrate(path)
    return connect(path, readonly=readonly)


def _check_integrity(path: Path) -> None:
    """`StudyDatabaseError` naming `path` when SQLite finds it damaged or no database."""
    conn = None
    try:
        conn = connect(path, readonly=True)
        verdict = str(conn.execute("PRAGMA quick_check(1)").fetchone()[0])
    except sqlite3.DatabaseError as err:
        if getattr(err, "sqlite_errorcode", 0) & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            raise
        raise StudyDatabaseError(path, str(err)) from err
    finally:
        if conn is not None:
            conn.close()
    if verdict != "ok":
        raise StudyDatabaseError(path, f"integrity check: {verdict}")


#: Schema 1 -> 2: columns with defaults only, so every schema-1 row reads as it did.
MIGRATION_1_TO_2 = (
    "ALTER TABLE items ADD COLUMN system TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE items ADD COLUMN caption_b TEXT",
    "ALTER TABLE assignments ADD COLUMN swapped INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE answers ADD COLUMN choice TEXT",
    "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
)


def _schema_version(conn: sqlite3.Connection) -> str | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error:
        return None  # not a study database: StudyStore says so
    return None if row is None else str(row[0])


def migrate(path: Path) -> None:
    """Bring a schema-1 study (multi2cap 0.2) to schema 2 in one transaction; anything else is
    left to `StudyStore`, which names the version it found. Safe while a server runs."""
    probe = connect(path, readonly=True)
    try:
        old = _schema_version(probe) == "1"
    finally:
        probe.close()
    if not old:
        return
    try:
        conn = connect(path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if _schema_version(conn) == "1":  # not done meanwhile by another process
                for statement in MIGRATION_1_TO_2:
                    conn.execute(statement)
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise ValueError(
            f"{path}: a study of schema 1 (multi2cap 0.2) gains four columns when first opened "
            f"by this version, and that failed ({err}): make the file writable and retry"
        ) from err


def validate_score(value: Any) -> int:
    """A MOS answer: an integer 1-5 (a JSON number with no fraction; booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StudyError(422, f"score must be an integer from 1 to 5, found {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise StudyError(422, f"score must be an integer from 1 to 5, found {value!r}")
    if not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
        raise StudyError(422, f"score must be an integer from 1 to 5, found {value!r}")
    return int(value)


def validate_caption(value: Any) -> str:
    """A caption answer: whitespace collapsed and stripped, 1-500 characters."""
    if not isinstance(value, str):
        raise StudyError(422, f"caption must be text, found {type(value).__name__}")
    text = " ".join(value.split())
    if not text:
        raise StudyError(422, "caption is empty: describe what you hear")
    if len(text) > CAPTION_MAX_CHARS:
        raise StudyError(422, f"caption has {len(text)} characters; at most {CAPTION_MAX_CHARS}")
    return text


def validate_choice(value: Any) -> str:
    """An A/B answer: "A" or "B" (the caption shown first or second) or "tie" (no preference)."""
    if value not in CHOICES:
        raise StudyError(422, f"choice must be one of {', '.join(CHOICES)}, found {value!r}")
    return str(value)


def preferred_side(choice: str, swapped: int) -> str:
    """An A/B answer un-randomised: "a" (the item's `caption`), "b" (`caption_b`) or "tie"."""
    if choice == "tie":
        return "tie"
    return "a" if (choice == "A") != bool(swapped) else "b"


def gold_failed(kind: StudyKind, score: int | None, choice: str | None, swapped: int) -> bool:
    """Whether an answer to a gold item fails the attention check: a caption of another clip
    rated above `GOLD_MAX_SCORE`, or, in an A/B gold item, preferred to this clip's own caption
    (`caption_b` holds the other clip's; a tie is not a failure: the own caption may be poor)."""
    if kind == "ab":
        return choice is not None and preferred_side(choice, swapped) == "b"
    return score is not None and score > GOLD_MAX_SCORE


#: The `answers` column each kind's stage-0 answer goes to.
ANSWER_COLUMN: dict[StudyKind, str] = {
    "mos": "score",
    "system-mos": "score",
    "ab": "choice",
    "captions": "caption",
}


class StudyStore:
    """The study's queries and updates on one connection (transactions are the caller's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        version = self._meta("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"study database has schema {version}, this multi2cap reads {SCHEMA_VERSION}: "
                "open it with the multi2cap version that created it (see its study.json)"
            )
        self.settings: dict[str, Any] = json.loads(self._meta("settings"))
        self.kind: StudyKind = self.settings["kind"]
        self.listen_check: bool = bool(self.settings.get("listen_check", True))

    def _meta(self, key: str) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise ValueError(f"study database lacks meta {key!r}: not a multi2cap study")
        return str(row["value"])

    # --- authentication -------------------------------------------------------------------
    def rater_for_token(self, token: str) -> int | None:
        rows = self.conn.execute("SELECT id, token_sha256 FROM raters").fetchall()
        return match_token(token, ((int(r["id"]), bytes(r["token_sha256"])) for r in rows))

    def admin_token_digest(self) -> str:
        """The admin token's SHA-256, hex."""
        return self._meta("admin_token_sha256")

    def is_admin_token(self, token: str) -> bool:
        return match_token(token, [(0, bytes.fromhex(self._meta("admin_token_sha256")))]) == 0

    def create_session(self, rater_id: int | None, now: float) -> tuple[str, str]:
        """A new session for a rater (or the admin, None): (session id, CSRF token)."""
        sid, csrf = new_token(), new_token()
        self.conn.execute(
            "INSERT INTO sessions (sid_sha256, rater_id, csrf, created_at) VALUES (?, ?, ?, ?)",
            (token_digest(sid), rater_id, csrf, now),
        )
        return sid, csrf

    def session(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 64:
            return None
        row = self.conn.execute(
            "SELECT rater_id, csrf FROM sessions WHERE sid_sha256 = ?", (token_digest(sid),)
        ).fetchone()
        return None if row is None else Session(row["rater_id"], row["csrf"])

    def rater_name(self, rater_id: int) -> str:
        return str(
            self.conn.execute("SELECT name FROM raters WHERE id = ?", (rater_id,)).fetchone()[0]
        )

    # --- the rater's state ----------------------------------------------------------------
    def _current(self, rater_id: int) -> tuple[sqlite3.Row, int, int] | None:
        """(the first assignment not finished, the stage it is at, the rater's total) or None."""
        row = self.conn.execute(
            """SELECT a.*, i.caption AS item_caption, i.caption_b, i.duration_s, i.frame, r.total,
                      s1.caption AS stage1_caption, s1.answered_at AS stage1_at
               FROM raters r
               JOIN assignments a ON a.rater_id = r.id AND a.position = r.done + 1
               JOIN items i ON i.id = a.item_id
               LEFT JOIN answers s1 ON s1.assignment_id = a.id AND s1.stage = 1
               WHERE r.id = ?""",
            (rater_id,),
        ).fetchone()
        if row is None:
            return None
        if self.kind != "captions":
            return row, MOS_STAGE, int(row["total"])
        return row, 1 if row["stage1_caption"] is None else 2, int(row["total"])

    def state(self, rater_id: int, now: float) -> dict[str, Any]:
        """What the rater's page shows now; marks the current item as shown (listen clock)."""
        mode = PAGE_MODES[self.kind]  # never the kind itself: nothing on the page tells systems
        current = self._current(rater_id)
        if current is None:
            total = self.conn.execute("SELECT total FROM raters WHERE id = ?", (rater_id,))
            n = int(total.fetchone()[0])
            return {"kind": mode, "total": n, "done": True, "position": n}
        row, stage, n = current
        base: dict[str, Any] = {"kind": mode, "total": n}
        if row["shown_at"] is None:
            self.conn.execute("UPDATE assignments SET shown_at = ? WHERE id = ?", (now, row["id"]))
        key = row["key"]
        item: dict[str, Any] = {
            "key": key,
            "stage": stage,
            "audio": f"/media/{key}/audio",
            "duration_s": row["duration_s"],
        }
        if mode == "mos":
            item["caption"] = row["item_caption"]
        elif mode == "ab":
            pair = [row["item_caption"], row["caption_b"]]
            item["captions"] = pair[::-1] if row["swapped"] else pair  # as shown: A, then B
        elif stage == 2:
            item["frame"] = f"/media/{key}/frame"
            item["stage1_caption"] = row["stage1_caption"]
        return {**base, "done": False, "position": int(row["position"]), "item": item}

    def validate(self, stage: Any, raw: Any) -> tuple[int, int | str]:
        """(stage, value) of an answer as received, or StudyError 422 saying what is wrong."""
        if self.kind != "captions":
            if stage not in (None, MOS_STAGE) or isinstance(stage, bool):
                raise StudyError(422, f"the {self.kind} study has one stage (0), found {stage!r}")
            if self.kind == "ab":
                return MOS_STAGE, validate_choice(raw)
            return MOS_STAGE, validate_score(raw)
        if stage not in (1, 2) or isinstance(stage, bool):
            raise StudyError(
                422, f"stage must be 1 (audio only) or 2 (with frame), found {stage!r}"
            )
        return int(stage), validate_caption(raw)

    def answer(self, rater_id: int, key: Any, stage: Any, raw: Any, now: float) -> dict[str, Any]:
        """Validate and store one answer once; a repeat of a stored answer is acknowledged as is.

        Returns `{"stored": bool, "state": ...}` (`stored` False for a repeat). Raises
        `StudyError` 422 for a bad value, 404 for a key that is not this rater's, 409 for an
        answer out of turn, a changed repeat (answers are locked once submitted) or one given
        before the clip has had time to play to the end.
        """
        stage, value = self.validate(stage, raw)
        if not isinstance(key, str) or not _KEY.match(key):
            raise StudyError(404, "no such item for this rater")
        row = self.conn.execute(
            """SELECT a.id, a.position, a.shown_at, i.duration_s FROM assignments a
               JOIN items i ON i.id = a.item_id WHERE a.key = ? AND a.rater_id = ?""",
            (key, rater_id),
        ).fetchone()
        if row is None:
            raise StudyError(404, "no such item for this rater")
        column = ANSWER_COLUMN[self.kind]
        stored = self.conn.execute(
            f"SELECT {column} FROM answers WHERE assignment_id = ? AND stage = ?",
            (row["id"], stage),
        ).fetchone()
        if stored is not None:
            if stored[0] != value:
                raise StudyError(409, "this item was already answered; answers are locked")
            return {"stored": False, "state": self.state(rater_id, now)}
        current = self._current(rater_id)
        if current is None or current[0]["id"] != row["id"] or current[1] != stage:
            raise StudyError(409, "not the current item: reload the page to continue")
        cur = current[0]
        shown_at = cur["stage1_at"] if stage == 2 else cur["shown_at"]
        if shown_at is None:
            raise StudyError(409, "this item has not been shown yet: reload the page")
        needed = LISTEN_FRACTION * float(row["duration_s"]) if self.listen_check else 0.0
        if stage != 2 and now - shown_at < needed:
            raise StudyError(
                409, f"listen to the whole clip first ({now - shown_at:.1f} s of {needed:.1f} s)"
            )
        self.conn.execute(
            f"INSERT INTO answers (assignment_id, stage, {column}, shown_at, answered_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (row["id"], stage, value, shown_at, now),
        )
        if stage in (MOS_STAGE, 2):  # the item is finished: the next one becomes current
            self.conn.execute("UPDATE raters SET done = done + 1 WHERE id = ?", (rater_id,))
        return {"stored": True, "state": self.state(rater_id, now)}

    def media_path(self, rater_id: int, key: str, kind: str) -> str:
        """The study-relative file of an assignment's audio or frame, if this rater may see it.

        The frame of a captions item exists for the rater only once its stage-1 caption is in.
        """
        if not _KEY.match(key) or kind not in ("audio", "frame"):
            raise StudyError(404, "not found")
        row = self.conn.execute(
            """SELECT a.id, i.audio, i.frame FROM assignments a JOIN items i ON i.id = a.item_id
               WHERE a.key = ? AND a.rater_id = ?""",
            (key, rater_id),
        ).fetchone()
        if row is None or (kind == "frame" and (self.kind != "captions" or not row["frame"])):
            raise StudyError(404, "not found")
        if kind == "frame":
            done = self.conn.execute(
                "SELECT 1 FROM answers WHERE assignment_id = ? AND stage = 1", (row["id"],)
            ).fetchone()
            if done is None:
                raise StudyError(403, "the frame opens after the audio-only caption is submitted")
        return str(row[kind])

    # --- progress, MOS so far, exports --------------------------------------------------------
    def progress(self) -> list[RaterProgress]:
        stages = 2 if self.kind == "captions" else 1
        rows = self.conn.execute(
            f"""SELECT r.name, r.total * {stages} AS total, COUNT(an.id) AS done,
                  MAX(an.answered_at) AS last_at
               FROM raters r
               LEFT JOIN assignments a ON a.rater_id = r.id
               LEFT JOIN answers an ON an.assignment_id = a.id
               GROUP BY r.id ORDER BY r.name"""
        ).fetchall()
        gold: dict[str, list[bool]] = {r["name"]: [] for r in rows}
        for answer in self.conn.execute(
            """SELECT r.name, an.score, an.choice, a.swapped FROM answers an
               JOIN assignments a ON a.id = an.assignment_id JOIN raters r ON r.id = a.rater_id
               JOIN items i ON i.id = a.item_id WHERE i.gold = 1"""
        ):
            failed = gold_failed(self.kind, answer["score"], answer["choice"], answer["swapped"])
            gold[answer["name"]].append(failed)
        return [
            RaterProgress(
                r["name"],
                int(r["done"]),
                int(r["total"]),
                len(gold[r["name"]]),
                sum(gold[r["name"]]),
                r["last_at"],
            )
            for r in rows
        ]

    def answer_rows(self) -> list[sqlite3.Row]:
        """Every answer with its rater, item and timing, in rater then position order."""
        return self.conn.execute(
            """SELECT r.name AS rater, i.item, i.system, i.gold, i.gold_source,
                      i.caption AS item_caption, i.caption_b, a.position, a.swapped, an.stage,
                      an.score, an.caption, an.choice, an.shown_at, an.answered_at
               FROM answers an JOIN assignments a ON a.id = an.assignment_id
               JOIN raters r ON r.id = a.rater_id JOIN items i ON i.id = a.item_id
               ORDER BY r.name, a.position, an.stage"""
        ).fetchall()

    def items(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM items ORDER BY id").fetchall()


def initialise(conn: sqlite3.Connection, settings: dict[str, Any], admin_token: str) -> None:
    """Create the schema and the meta rows of a new study (inside the caller's transaction)."""
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('settings', ?), ('admin_token_sha256', ?), "
        "('created_at', ?), ('schema_version', ?)",
        (
            json.dumps(settings, sort_keys=True),
            token_digest(admin_token).hex(),
            str(time.time()),
            SCHEMA_VERSION,
        ),
    )
