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

from sqlalchemy import Double, case, cast, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store import Database
from gateway.store.database import is_unique_violation
from gateway.store.schema import arena_excluded_clients, battle_sides, battle_turns, battles, shares, votes

SIDES = ("a", "b")
FINISHED = ("done", "stopped", "error")
DEFAULT_LEASE = 90.0  # seconds a claimed side is held without renewal (the gateway passes its answer deadline)


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


class NotAContest(StoreError):
    """A side failed or said nothing: there is nothing to compare."""

    code = "not_a_contest"


class BattleNotVoted(StoreError):
    """Regenerating and sharing come after the vote: before it they would bias it or reveal the pair."""

    code = "battle_not_voted"


class TooManyRegenerations(StoreError):
    code = "too_many_regenerations"


class ShareNotFound(StoreError):
    code = "share_not_found"


def is_contest(result: "SideResult") -> bool:
    """Both the status and the text make an answer: done or stopped after saying something."""
    return result.status in ("done", "stopped") and bool(result.answer.strip())


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
class Turn:
    """An earlier turn of a multi-turn battle: the user's prompt and both answers."""

    prompt: str
    sides: dict[str, SideResult]


@dataclass
class Battle:
    id: str
    created_at: float
    model_a: str
    model_b: str
    seed: int
    request: dict[str, Any]
    sides: dict[str, SideResult] = field(default_factory=dict)   # the current turn
    vote: str | None = None
    earlier: list[Turn] = field(default_factory=list)
    token_hash: str | None = None
    client: str | None = None

    def model(self, side: str) -> str:
        return self.model_a if side == "a" else self.model_b

    @property
    def prompts(self) -> list[str]:
        """The user's prompts, one per turn, the current one last."""
        return list(self.request.get("prompts") or [self.request["prompt"]])

    @property
    def turn(self) -> int:
        return len(self.earlier) + 1

    def all_turns(self) -> list[Turn]:
        return [*self.earlier, Turn(self.prompts[-1], self.sides)]

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
    turns: list[dict[str, Any]] | None = None    # every turn: {"user", "a", "b"} (answers), from revision 0101
    categories: list[str] | None = None
    client: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Vote":
        row = dict(row)
        for name in ("turns", "categories"):
            row[name] = json.loads(row[name]) if row.get(name) else None
        return cls(**row)


def _side(row: Any) -> SideResult:
    return SideResult(status=row.status, answer=row.answer, ttft=row.ttft, total=row.total, tokens=row.tokens,
                      tokens_per_second=row.tokens_per_second, finish_reason=row.finish_reason, error=row.error)


class VoteStore:
    """Battles and votes, in the gateway's `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- battles -------------------------------------------------------------------------

    async def create_battle(self, battle_id: str, model_a: str, model_b: str, seed: int,
                            request: dict[str, Any], *, now: float | None = None, token_hash: str | None = None,
                            client: str | None = None) -> Battle:
        created = time.time() if now is None else now
        async with self.db.write() as conn:
            await conn.execute(insert(battles).values(id=battle_id, created_at=created, model_a=model_a,
                                                      model_b=model_b, seed=seed, request=json.dumps(request),
                                                      token_hash=token_hash, client=client))
            await conn.execute(insert(battle_sides), [{"battle_id": battle_id, "side": s} for s in SIDES])
        return Battle(battle_id, created, model_a, model_b, seed, request, {s: SideResult() for s in SIDES},
                      token_hash=token_hash, client=client)

    async def get_battle(self, battle_id: str) -> Battle:
        async with self.db.read() as conn:
            row = (await conn.execute(select(battles).where(battles.c.id == battle_id))).first()
            if row is None:
                raise BattleNotFound(f"no battle {battle_id!r}")
            sides = (await conn.execute(select(battle_sides).where(battle_sides.c.battle_id == battle_id))).all()
            winner = (await conn.execute(select(votes.c.winner).where(votes.c.battle_id == battle_id))).scalar()
            earlier_rows = (await conn.execute(select(battle_turns).where(battle_turns.c.battle_id == battle_id)
                                               .order_by(battle_turns.c.turn, battle_turns.c.side))).all()
        earlier: dict[int, Turn] = {}
        for r in earlier_rows:
            earlier.setdefault(r.turn, Turn(r.prompt, {})).sides[r.side] = _side(r)
        return Battle(row.id, row.created_at, row.model_a, row.model_b, row.seed, json.loads(row.request),
                      {r.side: _side(r) for r in sides}, winner, [earlier[t] for t in sorted(earlier)],
                      row.token_hash, row.client)

    async def add_turn(self, battle_id: str, prompt: str) -> Battle:
        """Start the next turn: the current one (both sides finished, both answered) moves to
        `battle_turns`, and both sides wait for their next answer. Refused once voted on."""
        async with self.db.write() as conn:
            row, sides, request, prompts = await _open_contest(conn, battle_id, "start a new battle")
            turn = (await conn.execute(select(func.count()).select_from(battle_turns).where(
                battle_turns.c.battle_id == battle_id))).scalar_one() // len(SIDES) + 1
            await conn.execute(insert(battle_turns), [
                {"battle_id": battle_id, "turn": turn, "side": s, "prompt": prompts[-1], **asdict(_side(sides[s]))}
                for s in SIDES])
            reset = asdict(SideResult())
            # Only sides still as they were read: a concurrent follow-up finds them pending and fails.
            for s in SIDES:
                changed = await conn.execute(update(battle_sides).where(
                    battle_sides.c.battle_id == battle_id, battle_sides.c.side == s,
                    battle_sides.c.status == sides[s].status).values(**reset))
                if changed.rowcount != 1:
                    raise BattleNotFinished(f"battle {battle_id!r} changed while adding a turn")
            request["prompts"] = [*prompts, prompt]
            await conn.execute(update(battles).where(battles.c.id == battle_id).values(request=json.dumps(request)))
        return await self.get_battle(battle_id)

    def _clock(self, now: float | None = None) -> Any:
        """The store's "now" (epoch seconds) as SQL, so every gateway sharing the store reads and
        writes leases on one clock: PostgreSQL's now(); on SQLite the store is on this machine
        (its clock is this one). `now` overrides it (tests)."""
        if now is not None:
            return literal(now, Double)
        if self.db.is_sqlite:
            return literal(time.time(), Double)
        return cast(func.extract("epoch", func.now()), Double)

    async def claim_side(self, battle_id: str, side: str, *, lease: float = DEFAULT_LEASE,
                         now: float | None = None) -> None:
        """Mark a side as streaming, held by its gateway for `lease` seconds (renewed by
        `touch_side`); refuse if it already was (a side streams only once)."""
        async with self.db.write() as conn:
            claimed = await conn.execute(update(battle_sides).where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.side == side,
                battle_sides.c.status == "pending").values(status="streaming", alive_until=self._clock(now) + lease))
            if claimed.rowcount == 1:
                return
            exists = (await conn.execute(select(battles.c.id).where(battles.c.id == battle_id))).first()
        if not exists:
            raise BattleNotFound(f"no battle {battle_id!r}")
        raise SideBusy(f"side {side!r} of battle {battle_id!r} was already streamed")

    async def finish_side(self, battle_id: str, side: str, result: SideResult) -> bool:
        """Record a streaming side's result; False if the side was no longer streaming (recovered
        as stale by `recover_stale_sides`: what a reader was shown since then stays)."""
        if result.status not in FINISHED:
            raise ValueError(f"a side finishes as one of {FINISHED}, not {result.status!r}")
        async with self.db.write() as conn:
            return (await conn.execute(update(battle_sides).where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.side == side,
                battle_sides.c.status == "streaming").values(**asdict(result), alive_until=None,
                                                             replaced=None))).rowcount == 1

    async def touch_side(self, battle_id: str, side: str, *, lease: float = DEFAULT_LEASE,
                         now: float | None = None) -> None:
        """Renew a streaming side's lease: its gateway is alive and holds it `lease` seconds more
        (see `recover_stale_sides`)."""
        async with self.db.write() as conn:
            await conn.execute(update(battle_sides).where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.side == side,
                battle_sides.c.status == "streaming").values(alive_until=self._clock(now) + lease))

    async def stale_sides(self, battle_id: str, *, now: float | None = None) -> list[Any]:
        """The battle's "streaming" sides whose lease ran out on the store's clock (or that have
        none: claimed by a gateway version without leases)."""
        async with self.db.read() as conn:
            return list((await conn.execute(select(battle_sides).where(
                battle_sides.c.battle_id == battle_id, battle_sides.c.status == "streaming",
                (battle_sides.c.alive_until < self._clock(now)) | battle_sides.c.alive_until.is_(None)))).all())

    async def recover_stale_sides(self, battle_id: str, *, now: float | None = None) -> list[str]:
        """End the battle's sides left "streaming" by a gateway that died (killed, or its machine
        lost): a live side's gateway renews its lease well before it ends, so a side whose lease
        ran out is nobody's. A regenerated side gets back the result the regeneration replaced,
        and the regeneration is not counted (it can be asked again); a first answer ends as an
        error (what it said died with the gateway). Returns the sides recovered."""
        stale = await self.stale_sides(battle_id, now=now)
        return await self.end_sides(battle_id, stale) if stale else []

    async def end_sides(self, battle_id: str, stale: list[Any]) -> list[str]:
        """End the `stale` sides (rows read by `stale_sides`) that are still as read: a side its
        gateway finished or renewed meanwhile is left alone, and its count stays."""
        recovered = []
        async with self.db.write() as conn:
            row = (await conn.execute(select(battles).where(battles.c.id == battle_id).with_for_update())).first()
            if row is None:  # pruned meanwhile
                return []
            request = json.loads(row.request)
            restored = False
            for side in stale:
                if side.replaced:
                    result = SideResult(**json.loads(side.replaced))
                else:
                    result = SideResult(status="error", error="the gateway streaming this answer stopped (it was "
                                                              "restarted) before the answer ended")
                changed = await conn.execute(update(battle_sides).where(
                    battle_sides.c.battle_id == battle_id, battle_sides.c.side == side.side,
                    battle_sides.c.status == "streaming",
                    battle_sides.c.alive_until.is_not_distinct_from(side.alive_until))
                    .values(**asdict(result), alive_until=None, replaced=None))
                if changed.rowcount != 1:
                    continue
                recovered.append(side.side)
                if side.replaced:  # the regeneration never happened: it is not counted
                    counts = request.get("regenerated") or {}
                    counts[side.side] = max(0, counts.get(side.side, 0) - 1)
                    restored = True
            if restored:
                await conn.execute(update(battles).where(battles.c.id == battle_id)
                                   .values(request=json.dumps(request)))
        return recovered

    async def prune_battles(self, older_than: float) -> int:
        """Forget unvoted battles created before `older_than` (a time.time()); votes stay."""
        async with self.db.write() as conn:
            old = select(battles.c.id).where(battles.c.created_at < older_than,
                                             battles.c.id.not_in(select(votes.c.battle_id)))
            for child in (battle_turns, battle_sides):
                await conn.execute(delete(child).where(child.c.battle_id.in_(old)))
            return (await conn.execute(delete(battles).where(battles.c.id.in_(old)))).rowcount

    async def regenerate(self, battle_id: str, sides: tuple[str, ...], *, limit: int, seed: int) -> Battle:
        """Ask `sides` of a voted battle again: each waits for a new answer, drawn with its own
        new seed (`request["side_seeds"]`). The vote, and the answers it applied to, stay in the
        vote row; at most `limit` regenerations per side."""
        async with self.db.write() as conn:
            # Locked (PostgreSQL): a concurrent recovery or follow-up rewrites `request` after this.
            row = (await conn.execute(select(battles).where(battles.c.id == battle_id).with_for_update())).first()
            if row is None:
                raise BattleNotFound(f"no battle {battle_id!r}")
            if not (await conn.execute(select(votes.c.id).where(votes.c.battle_id == battle_id))).first():
                raise BattleNotVoted(f"battle {battle_id!r} has no vote yet: vote first, then regenerate "
                                     "(a second chance for one side before the vote would bias it)")
            request = json.loads(row.request)
            counts = request.setdefault("regenerated", {})
            if any(counts.get(s, 0) >= limit for s in sides):
                raise TooManyRegenerations(f"a side of a battle is regenerated at most {limit} times")
            current = {r.side: r for r in (await conn.execute(
                select(battle_sides).where(battle_sides.c.battle_id == battle_id))).all()}
            for s in sides:
                # The result replaced is kept until the new one is recorded (see recover_stale_sides).
                changed = await conn.execute(update(battle_sides).where(
                    battle_sides.c.battle_id == battle_id, battle_sides.c.side == s,
                    battle_sides.c.status.in_(FINISHED)).values(**asdict(SideResult()),
                                                                 replaced=json.dumps(asdict(_side(current[s])))))
                if changed.rowcount != 1:
                    raise BattleNotFinished(f"side {s!r} of battle {battle_id!r} is still streaming")
                counts[s] = counts.get(s, 0) + 1
                request.setdefault("side_seeds", {})[s] = (seed + counts[s]) % 2**31
            await conn.execute(update(battles).where(battles.c.id == battle_id).values(request=json.dumps(request)))
        return await self.get_battle(battle_id)

    async def voted_turns(self, battle_id: str) -> list[dict[str, Any]] | None:
        """The turns as they were when the vote was cast (what the vote applies to)."""
        async with self.db.read() as conn:
            raw = (await conn.execute(select(votes.c.turns).where(votes.c.battle_id == battle_id))).scalar()
        return json.loads(raw) if raw else None

    # -- shares --------------------------------------------------------------------------

    async def share(self, share_id: str, kind: str, *, battle_id: str | None = None, body: Any = None,
                    client: str | None = None, now: float | None = None) -> str:
        """Store a share and return its id; a battle is shared once (its existing id comes back,
        also to the loser of two shares of it at once)."""
        try:
            async with self.db.write() as conn:
                if battle_id is not None:
                    existing = (await conn.execute(select(shares.c.id)
                                                   .where(shares.c.battle_id == battle_id))).scalar()
                    if existing:
                        return existing
                await conn.execute(insert(shares).values(
                    id=share_id, kind=kind, battle_id=battle_id, body=json.dumps(body) if body is not None else None,
                    client=client, created_at=time.time() if now is None else now))
        except IntegrityError as exc:
            if battle_id is None or not is_unique_violation(exc):
                raise
            async with self.db.read() as conn:
                return (await conn.execute(select(shares.c.id).where(shares.c.battle_id == battle_id))).scalar_one()
        return share_id

    async def get_share(self, share_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            row = (await conn.execute(select(shares).where(shares.c.id == share_id))).first()
        if row is None:
            raise ShareNotFound(f"no share {share_id!r}")
        return {"id": row.id, "kind": row.kind, "battle_id": row.battle_id, "created_at": row.created_at,
                "body": json.loads(row.body) if row.body else None}

    # -- votes ---------------------------------------------------------------------------

    async def record_vote(self, battle_id: str, winner: str, *, now: float | None = None,
                          client: str | None = None, categorize: Any = None) -> Vote:
        """Store the vote with everything about the battle (every turn), once; the battle must be
        finished and a contest. `categorize(user_prompts)` tags it."""
        created = time.time() if now is None else now
        try:
            async with self.db.write() as conn:
                row, sides, request, prompts = await _open_contest(conn, battle_id, "there is nothing to compare")
                earlier = (await conn.execute(select(battle_turns).where(battle_turns.c.battle_id == battle_id)
                                              .order_by(battle_turns.c.turn, battle_turns.c.side))).all()
                turns: dict[int, dict[str, Any]] = {}
                for r in earlier:
                    turns.setdefault(r.turn, {"user": r.prompt})[r.side] = r.answer
                    turns[r.turn][f"tokens_{r.side}"] = r.tokens
                turns[len(turns) + 1] = {"user": prompts[-1], "a": sides["a"].answer, "b": sides["b"].answer,
                                         "tokens_a": sides["a"].tokens, "tokens_b": sides["b"].tokens}
                turn_list = [turns[t] for t in sorted(turns)]
                categories = list(categorize(prompts)) if categorize else None
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
                # Token counts summed over the turns (style control compares whole conversations).
                for side in SIDES:
                    counts = [t.get(f"tokens_{side}") for t in turn_list]
                    values[f"tokens_{side}"] = sum(c for c in counts if c) if any(counts) else None
                extra = dict(turns=turn_list, categories=categories, client=client)
                stored = {**values, **{k: json.dumps(v) if k != "client" and v is not None else v
                                       for k, v in extra.items()}}
                vote_id = (await conn.execute(insert(votes).values(**stored).returning(votes.c.id))).scalar_one()
        except IntegrityError as exc:
            if is_unique_violation(exc):
                raise AlreadyVoted(f"battle {battle_id!r} already has a vote") from None
            raise
        return Vote(id=vote_id, **values, **extra)

    async def votes(self, page: int = 500) -> AsyncIterator[Vote]:
        """Every vote, oldest first, read `page` at a time: no connection is held while the
        caller waits (the export's client may read as slowly as it likes)."""
        async for row in self.vote_rows(page):
            yield Vote.from_row(row)

    async def vote_rows(self, page: int = 500) -> AsyncIterator[dict[str, Any]]:
        """Every vote's row, undecoded (`Vote.from_row` decodes one: a caller with many may do
        that off the event loop), oldest first, `page` at a time."""
        after = 0
        while True:
            async with self.db.read() as conn:
                rows = (await conn.execute(select(votes).where(votes.c.id > after)
                                           .order_by(votes.c.id).limit(page))).all()
            for row in rows:
                yield row._asdict()
            if len(rows) < page:
                return
            after = rows[-1].id

    async def vote_count(self) -> int:
        async with self.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(votes))).scalar_one()

    # -- clients -------------------------------------------------------------------------

    async def client_activity(self, since: float, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Per client: votes since `since` (a time.time()), all its votes, and whether it is excluded;
        most recent votes first, `limit` clients from `offset`."""
        async with self.db.read() as conn:
            recent = func.sum(case((votes.c.created_at >= since, 1), else_=0)).label("recent")
            total = func.count().label("total")
            rows = (await conn.execute(select(votes.c.client, recent, total, func.max(votes.c.created_at).label("last"))
                                       .where(votes.c.client.is_not(None)).group_by(votes.c.client)
                                       .order_by(recent.desc(), total.desc(), votes.c.client)
                                       .limit(limit).offset(offset))).all()
            excluded = {r.client: r for r in (await conn.execute(select(arena_excluded_clients).where(
                arena_excluded_clients.c.client.in_([r.client for r in rows])))).all()}
        return [{"client": r.client, "votes_recent": int(r.recent or 0), "votes_total": int(r.total),
                 "last_vote_at": r.last, "excluded": r.client in excluded,
                 "excluded_reason": excluded[r.client].reason if r.client in excluded else None} for r in rows]

    async def exclude_client(self, client: str, reason: str = "", *, now: float | None = None) -> None:
        async with self.db.write() as conn:
            await conn.execute(delete(arena_excluded_clients).where(arena_excluded_clients.c.client == client))
            await conn.execute(insert(arena_excluded_clients).values(
                client=client, excluded_at=time.time() if now is None else now, reason=reason))

    async def include_client(self, client: str) -> bool:
        async with self.db.write() as conn:
            return (await conn.execute(delete(arena_excluded_clients)
                                       .where(arena_excluded_clients.c.client == client))).rowcount > 0

    async def excluded_clients(self) -> set[str]:
        async with self.db.read() as conn:
            return set((await conn.execute(select(arena_excluded_clients.c.client))).scalars())

    async def exclusions_version(self) -> tuple[int, float]:
        """Changes whenever the set of excluded clients does (for the leaderboard's cache)."""
        async with self.db.read() as conn:
            row = (await conn.execute(select(func.count(), func.max(arena_excluded_clients.c.excluded_at)))).first()
        return int(row[0]), float(row[1] or 0.0)


async def _open_contest(conn: Any, battle_id: str, why_not: str) -> tuple[Any, dict[str, Any], dict, list[str]]:
    """The battle's row, its sides by name, its request and its user prompts, inside a write:
    only a battle that exists, has no vote, and whose sides both finished with an answer (a
    contest) may take a follow-up turn or a vote. The row is locked (PostgreSQL: `request` is
    read, changed and written back in this transaction)."""
    row = (await conn.execute(select(battles).where(battles.c.id == battle_id).with_for_update())).first()
    if row is None:
        raise BattleNotFound(f"no battle {battle_id!r}")
    if (await conn.execute(select(votes.c.id).where(votes.c.battle_id == battle_id))).first():
        raise AlreadyVoted(f"battle {battle_id!r} already has a vote")
    sides = {r.side: r for r in (await conn.execute(
        select(battle_sides).where(battle_sides.c.battle_id == battle_id))).all()}
    if any(sides[s].status not in FINISHED for s in SIDES):
        raise BattleNotFinished(f"battle {battle_id!r} has not finished streaming both answers")
    if not all(is_contest(_side(sides[s])) for s in SIDES):
        raise NotAContest(f"a side of battle {battle_id!r} gave no answer: {why_not}")
    request = json.loads(row.request)
    return row, sides, request, list(request.get("prompts") or [request["prompt"]])
