"""The gateway's store on SQLite and on a real PostgreSQL: migrations, keys, shared rate limits,
registrations, and its refusals."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.keys import ApiKeyStore, KeyCache, RateLimiter
from gateway.registration import Registration, RegistrationStore
from gateway.store import Database, DatabaseUnavailable, redact
from gateway.store.database import alembic_config, async_url
from gateway.store.schema import metadata


async def test_the_migrations_build_exactly_the_declared_schema(database):
    async with database.read() as conn:
        diffs = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    assert diffs == []
    assert await database.current_revision() is not None
    await database.upgrade()  # again: nothing to do, no error


async def test_gateways_starting_together_migrate_once(database_url):
    engines = [Database(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(db.upgrade() for db in engines))
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()  # one head, or this fails
        assert {await db.current_revision() for db in engines} == {head}
    finally:
        for db in engines:
            await db.dispose()


async def test_keys_are_hashed_listed_and_revoked(database):
    store = ApiKeyStore(database)
    key, secret = await store.create("tester", rpm=5)
    assert secret.startswith("sk-arena-") and key.prefix == secret[:13]
    assert (await store.verify(secret)).key_id == key.key_id
    assert await store.verify(secret + "x") is None
    assert [k.key_id for k in await store.list()] == [key.key_id]
    assert await store.revoke(key.key_id) and not await store.revoke(key.key_id)
    assert await store.verify(secret) is None
    assert [k.public()["active"] for k in await store.list()] == [False]


async def test_the_key_cache_answers_from_memory_and_sees_new_keys_after_a_miss(database):
    store = ApiKeyStore(database)
    cache = KeyCache(store, miss_refresh=0.05)
    key, secret = await store.create("first")
    assert cache.get(secret) is None  # not loaded yet: a lookup never reads the store
    await cache.refresh_after_miss()
    assert cache.get(secret) == key
    await store.revoke(key.key_id)
    assert cache.get(secret) == key  # until the next refresh
    await cache.refresh()
    assert cache.get(secret) is None


async def test_a_rate_limit_holds_across_two_gateways(database, database_url):
    """Two limiters on two engines (as two gateway processes): 5 per minute lets through 5, not 10."""
    other = Database(database_url)
    clock = [630.0]  # half-way through a minute window
    limiters = [RateLimiter(database, clock=lambda: clock[0]), RateLimiter(other, clock=lambda: clock[0])]
    try:
        outcomes = [await limiters[i % 2].check("key_1", 5) for i in range(10)]
        assert outcomes[:5] == [None] * 5 and all(w is not None and 0 < w <= 60 for w in outcomes[5:])
        assert await limiters[0].check("key_2", 5) is None  # another key has its own count
        clock[0] += 60  # next window, half-way: half of the last one still counts, 5 * 0.5 -> 2 more
        assert [await limiters[i % 2].check("key_1", 5) is None for i in range(4)] == [True, True, False, False]
        clock[0] += 120
        assert await limiters[1].check("key_1", 5) is None
        assert await limiters[0].prune() >= 1
    finally:
        await other.dispose()


async def test_concurrent_requests_from_two_gateways_never_pass_the_limit(database, database_url):
    other = Database(database_url)
    try:
        limiters = [RateLimiter(database), RateLimiter(other)]
        results = await asyncio.gather(*(limiters[i % 2].check("key_c", 7) for i in range(20)))
        assert sum(r is None for r in results) == 7
    finally:
        await other.dispose()


async def test_registrations_round_trip(database):
    store = RegistrationStore(database)
    reg = Registration("r1", "smollm2-135m", "http://127.0.0.1:9", 30, 100.0, 130.0)
    await store.upsert(reg)
    await store.upsert(reg)  # again: an update, not a duplicate
    assert await store.active(120.0) == [reg]
    assert (await store.renew("r1", 60, 125.0)).expires_at == 185.0
    assert await store.renew("r1", 60, 200.0) is None  # expired: must register again
    assert await store.active(200.0) == []
    assert await store.purge_expired(200.0) == 1
    assert await store.get("r1") is None
    assert not await store.delete("r1")


def test_urls_are_normalised_and_redacted():
    assert async_url("postgresql://u:secret@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u:secret@h/db").drivername == "postgresql+asyncpg"
    assert async_url("sqlite:////tmp/x.sqlite3").drivername == "sqlite+aiosqlite"
    assert "secret" not in redact("postgresql://u:secret@h/db") and "***" in redact("postgresql://u:secret@h/db")
    with pytest.raises(ValueError, match="unsupported"):
        async_url("mysql://u:secret@h/db")
    with pytest.raises(ValueError) as refused:
        async_url("mysql://u:secret@h/db")
    assert "secret" not in str(refused.value)


async def test_an_unreachable_postgresql_is_unavailable_not_a_crash(postgres):
    db = Database(postgres.url().rsplit(":", 1)[0] + ":1/none", connect_timeout=2)
    try:
        with pytest.raises(DatabaseUnavailable) as failure:
            await db.check()
        assert "arena-test-pw" not in str(failure.value)
    finally:
        await db.dispose()


async def test_an_old_sqlite_file_is_adopted_with_its_data(tmp_path):
    """Files of earlier versions had the same tables without Alembic: the migration keeps their rows."""
    path = tmp_path / "gateway.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript("""
            CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL, rpm INTEGER, created_at REAL NOT NULL, revoked_at REAL);
            INSERT INTO api_keys VALUES ('key_old', 'old', 'abc', 'sk-arena-xxxx', NULL, 1.0, NULL);
        """)
    db = Database(f"sqlite:///{path}")
    try:
        await db.upgrade()
        assert [k.key_id for k in await ApiKeyStore(db).list()] == ["key_old"]
    finally:
        await db.dispose()


async def test_votes_of_an_old_arena_file_move_into_the_store(tmp_path):
    from gateway.arena.votes import VoteStore
    from gateway.store.legacy import import_legacy_votes

    with sqlite3.connect(tmp_path / "arena.sqlite3") as old:  # the schema earlier versions wrote
        old.executescript("""
            CREATE TABLE battles (id TEXT PRIMARY KEY, created_at REAL NOT NULL, model_a TEXT NOT NULL,
                model_b TEXT NOT NULL, seed INTEGER NOT NULL, request TEXT NOT NULL);
            CREATE TABLE battle_sides (battle_id TEXT NOT NULL, side TEXT NOT NULL, status TEXT NOT NULL,
                answer TEXT NOT NULL, ttft REAL, total REAL, tokens INTEGER, tokens_per_second REAL,
                finish_reason TEXT, error TEXT, PRIMARY KEY (battle_id, side));
            CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, battle_id TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL, winner TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL,
                prompt TEXT NOT NULL, system_prompt TEXT NOT NULL DEFAULT '', temperature REAL, max_tokens INTEGER,
                seed INTEGER, answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, status_a TEXT NOT NULL,
                status_b TEXT NOT NULL, ttft_a REAL, ttft_b REAL, total_a REAL, total_b REAL, tokens_a INTEGER,
                tokens_b INTEGER, tokens_per_second_a REAL, tokens_per_second_b REAL);
            INSERT INTO battles VALUES ('b1', 1.0, 'm1', 'm2', 7, '{"prompt": "hi"}');
            INSERT INTO battle_sides (battle_id, side, status, answer) VALUES ('b1', 'a', 'done', 'x'),
                ('b1', 'b', 'done', 'y');
            INSERT INTO votes (battle_id, created_at, winner, model_a, model_b, prompt, answer_a, answer_b,
                status_a, status_b) VALUES ('b1', 2.0, 'tie', 'm1', 'm2', 'hi', 'x', 'y', 'done', 'done');
        """)
    db = Database(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    try:
        await db.upgrade()
        assert await import_legacy_votes(db, tmp_path) == 1
        assert [v.winner async for v in VoteStore(db).votes()] == ["tie"]
        assert (await VoteStore(db).get_battle("b1")).vote == "tie"
        assert not (tmp_path / "arena.sqlite3").exists() and (tmp_path / "arena.sqlite3.imported").exists()
        assert await import_legacy_votes(db, tmp_path) == 0
    finally:
        await db.dispose()
