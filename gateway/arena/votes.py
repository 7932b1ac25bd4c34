"""The arena's persistence: battles in progress and their votes, in the gateway's store.

A vote acknowledged to the browser is committed (on SQLite with ``synchronous=FULL``: on
disk, surviving a crash of the process or the machine). Several gateways may share the store:
one vote per battle is a UNIQUE constraint, not a check-then-write race, and a side is claimed
by a conditional UPDATE, so it streams once whichever gateway serves it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store import Database
from gateway.store.database import is_unique_violation
from gateway.store.schema import battle_sides, battles, votes

SIDES = ("a", "b")
FINISHED = ("done", "stopped", "error")


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


def _side(row: Any) -> SideResult:
    return SideResult(status=row.status, answer=row.answer, ttft=row.ttft, total=row.total, tokens=row.tokens,
                      tokens_per_second=row.tokens_per_second, finish_reason=row.finish_reason, error=row.error)


class VoteStore:
    """Battles and votes, in the gateway's `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- battles -------------------------------------------------------------------------

    async def create_battle(self, battle_id: str, model_a: str, model_b: str, seed: int,
                            request: dict[str, Any], *, now: float | None = None) -> Battle:
        created = time.time() if now is None else now
        async with self.db.write() as conn:
            await conn.execute(insert(battles).values(id=battle_id, created_at=created, model_a=model_a,
                                                      model_b=model_b, seed=seed, request=json.dumps(request)))
            await conn.execute(insert(battle_sides), [{"battle_id": battle_id, "side": s} for s in SIDES])
        return Battle(battle_id, created, model_a, model_b, seed, request, {s: SideResult() for s in SIDES})

    async def get_battle(self, battle_id: str) -> Battle:
        async with self.db.read() as conn:
            row = (await conn.execute(select(battles).where(battles.c.id == battle_id))).first()
            if row is None:
                raise BattleNotFound(f"no battle {battle_id!r}")
            sides = (await conn.execute(select(battle_sides).where(battle_sides.c.battle_id == battle_id))).all()
            winner = (await conn.execute(select(votes.c.winner).where(votes.c.battle_id == battle_id))).scalar()
        return Battle(row.id, row.created_at, row.model_a, row.model_b, row.seed, json.loads(row.request),
                      {r.side: _side(r) for r in sides}, winner)

    async def claim_side(self, battle_id: str, side: str) -> None:
        """Mark a side as streaming; refuse if it already was (a side streams only once)."""
        async with self.db.write() as conn:
            claimed = await conn.execute(update(battle_sides).where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.side == side,
                battle_sides.c.status == "pending").values(status="streaming"))
            if claimed.rowcount == 1:
                return
            exists = (await conn.execute(select(battles.c.id).where(battles.c.id == battle_id))).first()
        if not exists:
            raise BattleNotFound(f"no battle {battle_id!r}")
        raise SideBusy(f"side {side!r} of battle {battle_id!r} was already streamed")

    async def finish_side(self, battle_id: str, side: str, result: SideResult) -> None:
        if result.status not in FINISHED:
            raise ValueError(f"a side finishes as one of {FINISHED}, not {result.status!r}")
        async with self.db.write() as conn:
            await conn.execute(update(battle_sides).where(battle_sides.c.battle_id == battle_id,
                                                          battle_sides.c.side == side).values(**asdict(result)))

    async def prune_battles(self, older_than: float) -> int:
        """Forget unvoted battles created before `older_than` (a time.time()); votes stay."""
        async with self.db.write() as conn:
            old = select(battles.c.id).where(battles.c.created_at < older_than,
                                             battles.c.id.not_in(select(votes.c.battle_id)))
            await conn.execute(delete(battle_sides).where(battle_sides.c.battle_id.in_(old)))
            return (await conn.execute(delete(battles).where(battles.c.id.in_(old)))).rowcount

    # -- votes ---------------------------------------------------------------------------

    async def record_vote(self, battle_id: str, winner: str, *, now: float | None = None) -> Vote:
        """Store the vote with everything about the battle, once; the battle must be finished."""
        created = time.time() if now is None else now
        try:
            async with self.db.write() as conn:
                row = (await conn.execute(select(battles).where(battles.c.id == battle_id))).first()
                if row is None:
                    raise BattleNotFound(f"no battle {battle_id!r}")
                if (await conn.execute(select(votes.c.id).where(votes.c.battle_id == battle_id))).first():
                    raise AlreadyVoted(f"battle {battle_id!r} already has a vote")
                sides = {r.side: r for r in (await conn.execute(
                    select(battle_sides).where(battle_sides.c.battle_id == battle_id))).all()}
                if any(sides[s].status not in FINISHED for s in SIDES):
                    raise BattleNotFinished(f"battle {battle_id!r} has not finished streaming both answers")
                request = json.loads(row.request)
                a, b = sides["a"], sides["b"]
                values = dict(
                    battle_id=battle_id, created_at=created, winner=winner, model_a=row.model_a,
                    model_b=row.model_b, prompt=request.get("prompt", ""),
                    system_prompt=request.get("system") or "", temperature=request.get("temperature"),
                    max_tokens=request.get("max_tokens"), seed=row.seed,
                    answer_a=a.answer, answer_b=b.answer, status_a=a.status, status_b=b.status,
                    ttft_a=a.ttft, ttft_b=b.ttft, total_a=a.total, total_b=b.total,
                    tokens_a=a.tokens, tokens_b=b.tokens,
                    tokens_per_second_a=a.tokens_per_second, tokens_per_second_b=b.tokens_per_second,
                )
                vote_id = (await conn.execute(insert(votes).values(**values).returning(votes.c.id))).scalar_one()
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyVoted(f"battle {battle_id!r} already has a vote") from None
            raise
        return Vote(id=vote_id, **values)

    async def votes(self) -> AsyncIterator[Vote]:
        """Every vote, oldest first (streamed from the database, not loaded at once)."""
        async with self.db.read() as conn:
            result = await conn.stream(select(votes).order_by(votes.c.id))
            async for row in result:
                yield Vote(**row._asdict())

    async def vote_count(self) -> int:
        async with self.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(votes))).scalar_one()
