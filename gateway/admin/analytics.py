"""Request analytics: summed in memory per minute, model and instance, written to the store
periodically, rolled up by hour, and read back as time series.

`RequestAnalytics.record()` runs once per request after the answer went out (the proxy's
`_record`): a few additions into a dict, no I/O. `flush()` (a `Periodic`) adds the sums into
`analytics_minutes` and `api_key_usage` with one upsert per row, so gateways sharing a store add
up. `roll_up()` moves minute points older than the retention into `analytics_hours` and
deletes hour points older than theirs, so the tables stay bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Callable

from sqlalchemy import Integer, Table, cast, delete, func, select

from gateway.metrics import RequestSample
from gateway.store import Database
from gateway.store.schema import analytics_hours, analytics_minutes, api_key_usage, battles, votes

MINUTE, HOUR, DAY = 60, 3600, 86400
RESOLUTIONS = {"minute": (MINUTE, analytics_minutes), "hour": (HOUR, analytics_hours)}
MAX_PENDING = 10_000  # (minute, model, instance) rows held in memory between flushes


@dataclass
class Sums:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    duration_seconds: float = 0.0
    ttft_seconds: float = 0.0
    ttft_count: int = 0
    queue_seconds: float = 0.0
    queue_count: int = 0

    def add(self, other: "Sums") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def add_sample(self, s: RequestSample) -> None:
        self.requests += 1
        self.errors += 1 if s.error else 0
        self.prompt_tokens += s.prompt_tokens
        self.completion_tokens += s.completion_tokens
        self.duration_seconds += s.duration
        if s.completion_tokens and s.generation is not None:
            self.generation_seconds += s.generation
        if s.ttft is not None:
            self.ttft_seconds += s.ttft
            self.ttft_count += 1
        if s.queue is not None:
            self.queue_seconds += s.queue
            self.queue_count += 1

    def point(self) -> dict[str, Any]:
        """The sums and the figures derived from them (None where nothing was measured)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tokens_per_second"] = (round(self.completion_tokens / self.generation_seconds, 2)
                                    if self.generation_seconds > 0 else None)
        out["ttft_ms"] = round(self.ttft_seconds / self.ttft_count * 1000, 1) if self.ttft_count else None
        out["queue_ms"] = round(self.queue_seconds / self.queue_count * 1000, 1) if self.queue_count else None
        out["duration_ms"] = round(self.duration_seconds / self.requests * 1000, 1) if self.requests else None
        return out


_SUM_COLUMNS = [f.name for f in fields(Sums)]


def _upsert(db: Database):
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


class RequestAnalytics:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._pending: dict[tuple[int, str, str], Sums] = {}
        self._keys: dict[str, tuple[int, float]] = {}
        self.dropped = 0  # samples not kept because the pending table was full

    # -- the hot path (no I/O) -----------------------------------------------------------

    def record(self, sample: RequestSample) -> None:
        minute = int(sample.at // MINUTE) * MINUTE
        slot = (minute, sample.model, sample.instance)
        sums = self._pending.get(slot)
        if sums is None:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            sums = self._pending[slot] = Sums()
        sums.add_sample(sample)
        if sample.key_id:
            count, _ = self._keys.get(sample.key_id, (0, 0.0))
            self._keys[sample.key_id] = (count + 1, sample.at)

    # -- background ----------------------------------------------------------------------

    async def flush(self) -> int:
        """Add the pending sums into the store; on failure they are kept for the next flush."""
        pending, keys = self._pending, self._keys
        if not pending and not keys:
            return 0
        self._pending, self._keys = {}, {}
        try:
            insert = _upsert(self.db)
            async with self.db.write() as conn:
                for (minute, model, instance), sums in pending.items():
                    values = {c: getattr(sums, c) for c in _SUM_COLUMNS}
                    stmt = insert(analytics_minutes).values(period=minute, model=model, instance=instance, **values)
                    await conn.execute(stmt.on_conflict_do_update(
                        index_elements=["period", "model", "instance"],
                        set_={c: analytics_minutes.c[c] + stmt.excluded[c] for c in _SUM_COLUMNS}))
                for key_id, (count, last) in keys.items():
                    stmt = insert(api_key_usage).values(key_id=key_id, requests=count, last_used_at=last)
                    await conn.execute(stmt.on_conflict_do_update(
                        index_elements=["key_id"],
                        set_={"requests": api_key_usage.c.requests + count,
                              "last_used_at": (func.max if self.db.is_sqlite else func.greatest)(
                                  func.coalesce(api_key_usage.c.last_used_at, 0.0), last)}))
        except BaseException:
            self._merge_back(pending, keys)
            raise
        return len(pending)

    def _merge_back(self, pending: dict[tuple[int, str, str], Sums], keys: dict[str, tuple[int, float]]) -> None:
        for slot, sums in pending.items():
            if slot in self._pending:
                self._pending[slot].add(sums)
            elif len(self._pending) < MAX_PENDING:
                self._pending[slot] = sums
        for key_id, (count, last) in keys.items():
            old_count, old_last = self._keys.get(key_id, (0, 0.0))
            self._keys[key_id] = (old_count + count, max(old_last, last))

    async def roll_up(self, *, minute_retention: float, hour_retention: float) -> tuple[int, int]:
        """Fold minute points older than `minute_retention` seconds into hours; drop hours older
        than `hour_retention`. Returns (minute rows folded, hour rows dropped)."""
        now = self.clock()
        cutoff = int((now - minute_retention) // HOUR) * HOUR  # whole hours only
        insert = _upsert(self.db)
        hour_of = (analytics_minutes.c.period - analytics_minutes.c.period % HOUR)
        async with self.db.write() as conn:
            rows = (await conn.execute(
                select(hour_of.label("hour"), analytics_minutes.c.model, analytics_minutes.c.instance,
                       *[func.sum(analytics_minutes.c[c]).label(c) for c in _SUM_COLUMNS])
                .where(analytics_minutes.c.period < cutoff)
                .group_by(hour_of, analytics_minutes.c.model, analytics_minutes.c.instance))).all()
            for row in rows:
                values = {c: getattr(row, c) for c in _SUM_COLUMNS}
                stmt = insert(analytics_hours).values(period=row.hour, model=row.model, instance=row.instance, **values)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=["period", "model", "instance"],
                    set_={c: analytics_hours.c[c] + stmt.excluded[c] for c in _SUM_COLUMNS}))
            folded = (await conn.execute(delete(analytics_minutes).where(analytics_minutes.c.period < cutoff))).rowcount
            dropped = (await conn.execute(delete(analytics_hours).where(
                analytics_hours.c.period < now - hour_retention))).rowcount
        return folded, dropped

    # -- reading -------------------------------------------------------------------------

    async def series(self, resolution: str, since: float, *, by: str = "model") -> dict[str, Any]:
        """Points per period from `since`, per model (`by="model"`) or per instance.

        Hours include the minute points not yet rolled up, so the last hours are complete."""
        step, table = RESOLUTIONS[resolution]
        start = int(since // step) * step
        sources: list[Table] = [analytics_minutes] if step == MINUTE else [analytics_hours, analytics_minutes]
        buckets: dict[tuple[int, str], Sums] = {}
        async with self.db.read() as conn:
            for source in sources:
                rows = (await conn.execute(select(source).where(source.c.period >= start))).all()
                for row in rows:
                    period = int(row.period // step) * step
                    name = row.model if by == "model" else f"{row.model}/{row.instance}"
                    sums = buckets.setdefault((period, name), Sums())
                    sums.add(Sums(**{c: getattr(row, c) for c in _SUM_COLUMNS}))
        now = int(self.clock() // step) * step
        periods = list(range(start, now + step, step))
        names = sorted({name for _, name in buckets})
        totals: dict[str, Sums] = {name: Sums() for name in names}
        for (_, name), sums in buckets.items():
            totals[name].add(sums)
        return {
            "object": "admin.analytics", "resolution": resolution, "by": by, "step_seconds": step,
            "periods": periods,
            "series": {name: [buckets[(p, name)].point() if (p, name) in buckets else None for p in periods]
                       for name in names},
            "totals": {name: totals[name].point() for name in names},
        }

    async def arena_per_day(self, days: int) -> dict[str, Any]:
        """Battles opened and votes cast per UTC day over the last `days` days."""
        now = self.clock()
        start = int(now // DAY) * DAY - (days - 1) * DAY
        out: dict[str, dict[int, int]] = {}
        async with self.db.read() as conn:
            for name, table in (("battles", battles), ("votes", votes)):
                day = self._day(table.c.created_at)
                rows = (await conn.execute(select(day.label("day"), func.count().label("n"))
                                           .where(table.c.created_at >= start).group_by(day))).all()
                out[name] = {int(r.day) * DAY: int(r.n) for r in rows}
        periods = list(range(start, int(now // DAY) * DAY + DAY, DAY))
        return {"object": "admin.arena_activity", "days": periods,
                "battles": [out["battles"].get(d, 0) for d in periods],
                "votes": [out["votes"].get(d, 0) for d in periods]}

    def _day(self, column: Any) -> Any:
        # SQLite's CAST truncates (the times are positive, so it floors); PostgreSQL's rounds.
        if self.db.is_sqlite:
            return cast(column / DAY, Integer)
        return func.floor(column / DAY)

    async def key_usage(self) -> dict[str, dict[str, Any]]:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(api_key_usage))).all()
        usage = {r.key_id: {"requests": int(r.requests), "last_used_at": r.last_used_at} for r in rows}
        for key_id, (count, last) in self._keys.items():  # not flushed yet
            entry = usage.setdefault(key_id, {"requests": 0, "last_used_at": None})
            entry["requests"] += count
            entry["last_used_at"] = max(entry["last_used_at"] or 0.0, last)
        return usage
