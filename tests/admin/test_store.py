"""The admin side's repositories on SQLite and PostgreSQL: audit log, analytics and key use,
the roll-up that keeps analytics bounded, and the one head of the migrations."""

from __future__ import annotations

import json

from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select

from gateway.admin.analytics import HOUR, MINUTE, RequestAnalytics
from gateway.admin.audit import AuditLog, fingerprint
from gateway.metrics import RequestSample
from gateway.store.database import alembic_config
from gateway.store.schema import analytics_hours, analytics_minutes, battles, votes

T0 = 1_800_000_000.0 - 1_800_000_000.0 % HOUR  # the start of an hour


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sample(at: float, model: str = "m1", instance: str = "i1", **overrides) -> RequestSample:
    values = dict(at=at, model=model, instance=instance, key_id=None, status=200, error=False, duration=1.0,
                  ttft=0.2, queue=0.05, generation=0.8, prompt_tokens=10, completion_tokens=9)
    return RequestSample(**{**values, **overrides})


def test_migrations_have_one_head():
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_samples_prefer_the_instance_timings_when_reported():
    fields = dict(model="m", instance="i", key_id=None, status=200, error=False, prompt_tokens=3)
    own = RequestSample.of(ttft=0.01, duration=2.0, perf=None, completion_tokens=5, **fields)
    assert (own.ttft, own.queue, own.generation) == (0.01, None, 1.99)
    reported = RequestSample.of(ttft=0.01, duration=2.0, completion_tokens=5, **fields,
                                perf={"queue_ms": 30.0, "ttft_ms": 500.0, "generation_ms": 1200.0})
    assert (reported.ttft, reported.queue, reported.generation) == (0.5, 0.03, 1.2)
    nothing = RequestSample.of(ttft=None, duration=0.5, perf={"ttft_ms": None}, completion_tokens=0, **fields)
    assert (nothing.ttft, nothing.generation) == (None, None)


def test_fingerprint_names_a_key_without_revealing_it():
    secret = "admin-secret-value"
    assert fingerprint(secret) == fingerprint(secret)
    assert fingerprint(secret) != fingerprint(secret + "x")
    assert secret not in fingerprint(secret) and fingerprint(secret).startswith("key:")


async def test_audit_log_records_and_pages_newest_first(database):
    clock = Clock(T0)
    audit = AuditLog(database, clock=clock)
    for i in range(3):
        clock.now = T0 + i
        await audit.record("key:abc", "key.create", f"key_{i}", {"rpm": i})
    entries = await audit.recent(2)
    assert [e.target for e in entries] == ["key_2", "key_1"]
    assert entries[0].detail == {"rpm": 2} and entries[0].actor == "key:abc" and entries[0].at == T0 + 2
    assert [e.target for e in await audit.recent(10, before_id=entries[1].id)] == ["key_0"]
    assert await audit.prune(T0 + 1) == 1
    assert len(await audit.recent(10)) == 2


async def test_analytics_sum_in_memory_flush_and_add_up_across_flushes(database):
    clock = Clock(T0 + 30 * MINUTE + 5)
    analytics = RequestAnalytics(database, clock=clock)
    analytics.record(sample(clock.now, key_id="key_a"))
    analytics.record(sample(clock.now + 1, error=True, status=502, ttft=None, queue=None, completion_tokens=0,
                            prompt_tokens=0, key_id="key_a"))
    analytics.record(sample(clock.now, model="m2", instance="i9", ttft=0.4, duration=2.4, generation=2.0,
                            completion_tokens=20))
    async with database.read() as conn:
        assert (await conn.execute(select(func.count()).select_from(analytics_minutes))).scalar() == 0  # in memory only
    assert await analytics.flush() == 2
    analytics.record(sample(clock.now + 2))  # the same minute again: added to the stored row
    await analytics.flush()

    series = await analytics.series("minute", clock.now - 10 * MINUTE)
    assert series["step_seconds"] == MINUTE and len(series["periods"]) == 11
    m1 = series["totals"]["m1"]
    assert (m1["requests"], m1["errors"], m1["prompt_tokens"], m1["completion_tokens"]) == (3, 1, 20, 18)
    assert m1["ttft_ms"] == 200.0 and m1["queue_ms"] == 50.0
    assert m1["tokens_per_second"] == round(18 / 1.6, 2)  # completion tokens over the time after the first token
    assert series["totals"]["m2"]["tokens_per_second"] == round(20 / 2.0, 2)
    assert series["series"]["m1"][-1]["requests"] == 3 and series["series"]["m1"][0] is None

    by_instance = await analytics.series("minute", clock.now - 10 * MINUTE, by="instance")
    assert set(by_instance["totals"]) == {"m1/i1", "m2/i9"}

    usage = await analytics.key_usage()
    assert usage["key_a"]["requests"] == 2 and usage["key_a"]["last_used_at"] == clock.now + 1


async def test_flush_keeps_the_sums_when_the_store_fails(tmp_path):
    from gateway.store import Database

    unmigrated = Database(f"sqlite:///{tmp_path / 'empty.sqlite3'}")  # no tables: every write fails
    analytics = RequestAnalytics(unmigrated, clock=Clock(T0))
    analytics.record(sample(T0, key_id="k"))
    try:
        await analytics.flush()
    except Exception:
        pass
    else:
        raise AssertionError("the flush should have failed")
    await unmigrated.upgrade()
    analytics.record(sample(T0 + 1, key_id="k"))
    await analytics.flush()
    assert (await analytics.series("minute", T0))["totals"]["m1"]["requests"] == 2
    assert (await analytics.key_usage())["k"]["requests"] == 2
    await unmigrated.dispose()


async def test_roll_up_folds_old_minutes_into_hours_and_drops_old_hours(database):
    clock = Clock(T0 + 5 * HOUR + 10 * MINUTE)
    analytics = RequestAnalytics(database, clock=clock)
    for at in (T0 + 1 * MINUTE, T0 + 2 * MINUTE, T0 + HOUR + 3 * MINUTE, T0 + 5 * HOUR + 1 * MINUTE):
        analytics.record(sample(at))
    await analytics.flush()
    async with database.write() as conn:  # an hour point from long ago
        await conn.execute(insert(analytics_hours).values(
            period=T0 - 40 * 24 * HOUR, model="m1", instance="i1", requests=7, errors=0, prompt_tokens=0,
            completion_tokens=0, generation_seconds=0, duration_seconds=0, ttft_seconds=0, ttft_count=0,
            queue_seconds=0, queue_count=0))
    folded, dropped = await analytics.roll_up(minute_retention=3 * HOUR, hour_retention=30 * 24 * HOUR)
    assert (folded, dropped) == (3, 1)
    async with database.read() as conn:
        hours = (await conn.execute(select(analytics_hours.c.period, analytics_hours.c.requests)
                                    .order_by(analytics_hours.c.period))).all()
        minutes = (await conn.execute(select(func.count()).select_from(analytics_minutes))).scalar()
    assert [tuple(h) for h in hours] == [(T0, 2), (T0 + HOUR, 1)] and minutes == 1
    # By hour, the series reads the hours and the minutes not rolled up yet: nothing is lost.
    series = await analytics.series("hour", T0)
    assert [p and p["requests"] for p in series["series"]["m1"]] == [2, 1, None, None, None, 1]
    assert await analytics.roll_up(minute_retention=3 * HOUR, hour_retention=30 * 24 * HOUR) == (0, 0)


async def test_arena_battles_and_votes_per_day(database):
    day = 86400
    now = T0 - T0 % day + 12 * HOUR
    analytics = RequestAnalytics(database, clock=Clock(now))
    async with database.write() as conn:
        for i, at in enumerate((now - day, now - 1, now, now - 30 * day)):
            await conn.execute(insert(battles).values(id=f"b{i}", created_at=at, model_a="a", model_b="b", seed=1,
                                                      request=json.dumps({})))
        await conn.execute(insert(votes).values(battle_id="b2", created_at=now, winner="tie", model_a="a",
                                                model_b="b", prompt="p", answer_a="", answer_b="", status_a="done",
                                                status_b="done"))
    activity = await analytics.arena_per_day(3)
    assert activity["days"] == [now - now % day - 2 * day, now - now % day - day, now - now % day]
    assert activity["battles"] == [0, 1, 2] and activity["votes"] == [0, 0, 1]
