"""The arena's store: battles in progress and their votes, in SQLite.

SQLite in WAL mode with ``synchronous=FULL``: a vote acknowledged to the browser is on disk
and survives a crash of the process or the machine, and readers (the leaderboard) never block
writers. Each call opens its own connection, so the store is safe from any thread and from
several gateway processes sharing one file; writes take the write lock up front
(``BEGIN IMMEDIATE``) and wait up to `busy_timeout` for it, so concurrent voters queue rather
than fail. One vote per battle is a UNIQUE constraint, not a check-then-write race.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

SIDES = ("a", "b")
FINISHED = ("done", "stopped", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS battles (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    seed INTEGER NOT NULL,
    request TEXT NOT NULL              -- JSON: messages, system prompt, sampling settings
);
CREATE TABLE IF NOT EXISTS battle_sides (
    battle_id TEXT NOT NULL REFERENCES battles(id) ON DELETE CASCADE,
    side TEXT NOT NULL CHECK (side IN ('a', 'b')),
    status TEXT NOT NULL DEFAULT 'pending',   -- pending, streaming, done, stopped, error
    answer TEXT NOT NULL DEFAULT '',
    ttft REAL, total REAL, tokens INTEGER, tokens_per_second REAL,
    finish_reason TEXT, error TEXT,
    PRIMARY KEY (battle_id, side)
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    battle_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    winner TEXT NOT NULL CHECK (winner IN ('model_a', 'model_b', 'tie', 'both_bad')),
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    prompt TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    temperature REAL, max_tokens INTEGER, seed INTEGER,
    answer_a TEXT NOT NULL, answer_b TEXT NOT NULL,
    status_a TEXT NOT NULL, status_b TEXT NOT NULL,
    ttft_a REAL, ttft_b REAL, total_a REAL, total_b REAL,
    tokens_a INTEGER, tokens_b INTEGER,
    tokens_per_second_a REAL, tokens_per_second_b REAL
);
CREATE INDEX IF NOT EXISTS battles_created ON battles(created_at);
"""


class StoreError(Exception):
    """Base of the store's refusals; `code` names the reason for the API."""

    code = "store_error"


class BattleNotFound(StoreError):
    code = "battle_not_found"


class AlreadyVoted(StoreError):
    code = "already_voted"


class SideBusy(StoreError):
    """The side's answer was already requested: each side streams exactly once."""

    code = "side_already_streamed"


class BattleNotFinished(StoreError):
    code = "battle_not_finished"


@dataclass
class SideResult:
    """What one side of a battle answered, measured by the gateway on the real stream."""

    status: str = "pending"
    answer: str = ""
    ttft: float | None = None
    total: float | None = None
    tokens: int | None = None
    tokens_per_second: float | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Battle:
    id: str
    created_at: float
    model_a: str
    model_b: str
    seed: int
    request: dict[str, Any]
    sides: dict[str, SideResult] = field(default_factory=dict)
    vote: str | None = None

    def model(self, side: str) -> str:
        return self.model_a if side == "a" else self.model_b

    @property
    def finished(self) -> bool:
        return all(self.sides.get(s, SideResult()).status in FINISHED for s in SIDES)


@dataclass(frozen=True)
class Vote:
    id: int
    battle_id: str
    created_at: float
    winner: str
    model_a: str
    model_b: str
    prompt: str
    system_prompt: str
    temperature: float | None
    max_tokens: int | None
    seed: int | None
    answer_a: str
    answer_b: str
    status_a: str
    status_b: str
    ttft_a: float | None
    ttft_b: float | None
    total_a: float | None
    total_b: float | None
    tokens_a: int | None
    tokens_b: int | None
    tokens_per_second_a: float | None
    tokens_per_second_b: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class VoteStore:
    """Battles and votes in one SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- battles -------------------------------------------------------------------------

    def create_battle(self, battle_id: str, model_a: str, model_b: str, seed: int,
                      request: dict[str, Any], *, now: float | None = None) -> Battle:
        created = time.time() if now is None else now
        with self._write() as db:
            db.execute("INSERT INTO battles (id, created_at, model_a, model_b, seed, request) VALUES (?,?,?,?,?,?)",
                       (battle_id, created, model_a, model_b, seed, json.dumps(request)))
            db.executemany("INSERT INTO battle_sides (battle_id, side) VALUES (?, ?)",
                           [(battle_id, s) for s in SIDES])
        return Battle(battle_id, created, model_a, model_b, seed, request, {s: SideResult() for s in SIDES})

    def get_battle(self, battle_id: str) -> Battle:
        with self._connect() as db:
            row = db.execute("SELECT * FROM battles WHERE id = ?", (battle_id,)).fetchone()
            if row is None:
                raise BattleNotFound(f"no battle {battle_id!r}")
            sides = db.execute("SELECT * FROM battle_sides WHERE battle_id = ?", (battle_id,)).fetchall()
            vote = db.execute("SELECT winner FROM votes WHERE battle_id = ?", (battle_id,)).fetchone()
        results = {r["side"]: SideResult(status=r["status"], answer=r["answer"], ttft=r["ttft"], total=r["total"],
                                         tokens=r["tokens"], tokens_per_second=r["tokens_per_second"],
                                         finish_reason=r["finish_reason"], error=r["error"]) for r in sides}
        return Battle(row["id"], row["created_at"], row["model_a"], row["model_b"], row["seed"],
                      json.loads(row["request"]), results, vote["winner"] if vote else None)

    def claim_side(self, battle_id: str, side: str) -> None:
        """Mark a side as streaming; refuse if it already was (a side streams only once)."""
        with self._write() as db:
            cur = db.execute("UPDATE battle_sides SET status = 'streaming' WHERE battle_id = ? AND side = ? "
                             "AND status = 'pending'", (battle_id, side))
            if cur.rowcount == 1:
                return
            exists = db.execute("SELECT 1 FROM battles WHERE id = ?", (battle_id,)).fetchone()
        if not exists:
            raise BattleNotFound(f"no battle {battle_id!r}")
        raise SideBusy(f"side {side!r} of battle {battle_id!r} was already streamed")

    def finish_side(self, battle_id: str, side: str, result: SideResult) -> None:
        if result.status not in FINISHED:
            raise ValueError(f"a side finishes as one of {FINISHED}, not {result.status!r}")
        with self._write() as db:
            db.execute("UPDATE battle_sides SET status=?, answer=?, ttft=?, total=?, tokens=?, tokens_per_second=?, "
                       "finish_reason=?, error=? WHERE battle_id=? AND side=?",
                       (result.status, result.answer, result.ttft, result.total, result.tokens,
                        result.tokens_per_second, result.finish_reason, result.error, battle_id, side))

    def prune_battles(self, older_than: float) -> int:
        """Forget unvoted battles created before `older_than` (a time.time()); votes stay."""
        with self._write() as db:
            cur = db.execute("DELETE FROM battles WHERE created_at < ? AND id NOT IN (SELECT battle_id FROM votes)",
                             (older_than,))
            return cur.rowcount

    # -- votes ---------------------------------------------------------------------------

    def record_vote(self, battle_id: str, winner: str, *, now: float | None = None) -> Vote:
        """Store the vote with everything about the battle, once; the battle must be finished."""
        created = time.time() if now is None else now
        with self._write() as db:
            row = db.execute("SELECT * FROM battles WHERE id = ?", (battle_id,)).fetchone()
            if row is None:
                raise BattleNotFound(f"no battle {battle_id!r}")
            if db.execute("SELECT 1 FROM votes WHERE battle_id = ?", (battle_id,)).fetchone():
                raise AlreadyVoted(f"battle {battle_id!r} already has a vote")
            sides = {r["side"]: r for r in db.execute("SELECT * FROM battle_sides WHERE battle_id = ?", (battle_id,))}
            if any(sides[s]["status"] not in FINISHED for s in SIDES):
                raise BattleNotFinished(f"battle {battle_id!r} has not finished streaming both answers")
            request = json.loads(row["request"])
            a, b = sides["a"], sides["b"]
            values = dict(
                battle_id=battle_id, created_at=created, winner=winner, model_a=row["model_a"],
                model_b=row["model_b"], prompt=request.get("prompt", ""),
                system_prompt=request.get("system") or "", temperature=request.get("temperature"),
                max_tokens=request.get("max_tokens"), seed=row["seed"],
                answer_a=a["answer"], answer_b=b["answer"], status_a=a["status"], status_b=b["status"],
                ttft_a=a["ttft"], ttft_b=b["ttft"], total_a=a["total"], total_b=b["total"],
                tokens_a=a["tokens"], tokens_b=b["tokens"],
                tokens_per_second_a=a["tokens_per_second"], tokens_per_second_b=b["tokens_per_second"],
            )
            try:
                cur = db.execute(f"INSERT INTO votes ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                                 tuple(values.values()))
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise AlreadyVoted(f"battle {battle_id!r} already has a vote") from None
                raise
            return Vote(id=cur.lastrowid, **values)

    def votes(self) -> Iterator[Vote]:
        """Every vote, oldest first (streamed from the database, not loaded at once)."""
        with self._connect() as db:
            for row in db.execute("SELECT * FROM votes ORDER BY id"):
                yield Vote(**dict(row))

    def vote_count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
