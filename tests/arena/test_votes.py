"""VoteStore: one vote per battle, concurrent voters, durability across a crash (SQLite and PostgreSQL)."""

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from gateway.arena.battles import BattleManager
from gateway.arena.votes import (AlreadyVoted, BattleNotFinished, BattleNotFound, NotAContest, SideBusy,
                                 SideResult, VoteStore)
from gateway.store import Database
from gateway.store.schema import battle_turns, battles
from shared.catalogue import ArenaPolicy
from tests.harness import async_wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUEST = {"prompt": "Say hi", "system": "Be brief.", "temperature": 0.5, "max_tokens": 32}


async def finished_battle(store: VoteStore, battle_id: str = "b1", *, now: float | None = None) -> None:
    await store.create_battle(battle_id, "m1", "m2", 42, REQUEST, now=now)
    for side, answer in (("a", "hi"), ("b", "hello")):
        await store.claim_side(battle_id, side)
        await store.finish_side(battle_id, side, SideResult("done", answer, ttft=0.1, total=0.5, tokens=5,
                                                            tokens_per_second=10.0, finish_reason="stop"))


async def test_a_vote_stores_the_whole_battle(database):
    store = VoteStore(database)
    await finished_battle(store)
    vote = await store.record_vote("b1", "model_b")
    assert (vote.model_a, vote.model_b, vote.winner, vote.prompt, vote.system_prompt) == \
        ("m1", "m2", "model_b", "Say hi", "Be brief.")
    assert (vote.answer_a, vote.answer_b, vote.tokens_a, vote.ttft_b, vote.seed) == ("hi", "hello", 5, 0.1, 42)
    assert [v.to_dict() async for v in store.votes()] == [vote.to_dict()]
    assert (await store.get_battle("b1")).vote == "model_b"


async def test_refusals(database):
    store = VoteStore(database)
    with pytest.raises(BattleNotFound):
        await store.record_vote("nope", "tie")
    with pytest.raises(BattleNotFound):
        await store.claim_side("nope", "a")
    await store.create_battle("b1", "m1", "m2", 1, REQUEST)
    await store.claim_side("b1", "a")
    with pytest.raises(SideBusy):
        await store.claim_side("b1", "a")
    with pytest.raises(BattleNotFinished):
        await store.record_vote("b1", "tie")
    await store.finish_side("b1", "a", SideResult("stopped", "partial"))
    await store.claim_side("b1", "b")
    await store.finish_side("b1", "b", SideResult("error", "", error="boom"))
    # A side that failed (or stopped before its first token, or said nothing) is not a contest.
    with pytest.raises(NotAContest):
        await store.record_vote("b1", "tie")
    await finished_battle(store, "b2")
    await store.record_vote("b2", "tie")
    with pytest.raises(AlreadyVoted):
        await store.record_vote("b2", "model_a")
    await finished_battle(store, "b3")
    with pytest.raises(IntegrityError):
        await store.record_vote("b3", "draw")
    assert await store.vote_count() == 1


async def test_a_stopped_side_with_text_is_a_contest_an_empty_one_is_not(database):
    store = VoteStore(database)
    for battle_id, answer in (("partial", "Par"), ("silent", "  ")):
        await store.create_battle(battle_id, "m1", "m2", 1, REQUEST)
        await store.claim_side(battle_id, "a")
        await store.finish_side(battle_id, "a", SideResult("stopped", answer))
        await store.claim_side(battle_id, "b")
        await store.finish_side(battle_id, "b", SideResult("done", "Hello", finish_reason="stop"))
    assert (await store.record_vote("partial", "model_b")).status_a == "stopped"
    with pytest.raises(NotAContest):
        await store.record_vote("silent", "model_b")


async def test_a_multi_turn_battle_keeps_every_turn_and_the_vote_covers_them(database):
    store = VoteStore(database)
    await finished_battle(store, "mt")
    with pytest.raises(BattleNotFinished):  # the follow-up's answers are pending
        await store.add_turn("mt", "And again?")
        await store.add_turn("mt", "And again?")
    battle = await store.get_battle("mt")
    assert battle.turn == 2 and battle.prompts == ["Say hi", "And again?"]
    assert [t.sides["a"].answer for t in battle.earlier] == ["hi"]
    assert all(side.status == "pending" for side in battle.sides.values())
    with pytest.raises(BattleNotFinished):
        await store.record_vote("mt", "tie")
    for side, answer in (("a", "hi again"), ("b", "hello again")):
        await store.claim_side("mt", side)
        await store.finish_side("mt", side, SideResult("done", answer, tokens=3, finish_reason="stop"))
    vote = await store.record_vote("mt", "model_a", client="addr:1.2.3.4", categorize=lambda p: ["multi_turn"])
    assert vote.turns == [{"user": "Say hi", "a": "hi", "b": "hello", "tokens_a": 5, "tokens_b": 5},
                          {"user": "And again?", "a": "hi again", "b": "hello again", "tokens_a": 3, "tokens_b": 3}]
    assert (vote.tokens_a, vote.categories, vote.client) == (8, ["multi_turn"], "addr:1.2.3.4")
    assert [v.to_dict() async for v in store.votes()] == [vote.to_dict()]
    with pytest.raises(AlreadyVoted):
        await store.add_turn("mt", "One more")


async def test_pruning_an_unvoted_multi_turn_battle_forgets_every_turn(database):
    store = VoteStore(database)
    await finished_battle(store, "old", now=100.0)
    await store.add_turn("old", "More?")
    assert await store.prune_battles(older_than=200.0) == 1
    async with database.read() as conn:
        left = (await conn.execute(select(func.count()).select_from(battle_turns))).scalar_one()
    assert left == 0


async def test_clients_activity_and_exclusion(database):
    store = VoteStore(database)
    for i in range(3):
        await finished_battle(store, f"f{i}", now=1000.0 + i)
        await store.record_vote(f"f{i}", "model_a", client="addr:flood", now=1000.0 + i)
    await finished_battle(store, "q")
    await store.record_vote("q", "tie", client="key:quiet", now=10.0)
    activity = await store.client_activity(since=500.0)
    assert [(c["client"], c["votes_recent"], c["votes_total"], c["excluded"]) for c in activity] == \
        [("addr:flood", 3, 3, False), ("key:quiet", 0, 1, False)]
    await store.exclude_client("addr:flood", "flood")
    assert await store.excluded_clients() == {"addr:flood"}
    assert (await store.client_activity(since=500.0))[0]["excluded_reason"] == "flood"
    assert await store.include_client("addr:flood") and not await store.include_client("addr:flood")
    # A page at a time, in the same order.
    assert [c["client"] for c in await store.client_activity(since=500.0, limit=1)] == ["addr:flood"]
    assert [c["client"] for c in await store.client_activity(since=500.0, limit=1, offset=1)] == ["key:quiet"]
    assert await store.client_activity(since=500.0, limit=5, offset=2) == []


async def test_concurrent_voters_get_exactly_one_vote_per_battle(database, database_url):
    store = VoteStore(database)
    for i in range(10):
        await finished_battle(store, f"b{i}")
    # As several gateways would: each voter has its own engine and connections.
    voters = [Database(database_url) for _ in range(4)]

    async def voter(n: int, db: Database) -> list[str]:
        own, results = VoteStore(db), []
        for i in range(10):
            try:
                await own.record_vote(f"b{i}", ("model_a", "model_b", "tie")[n % 3])
                results.append("ok")
            except AlreadyVoted:
                results.append("dup")
        return results

    try:
        outcomes = sum(await asyncio.gather(*(voter(n, db) for n, db in enumerate(voters))), [])
    finally:
        for db in voters:
            await db.dispose()
    assert outcomes.count("ok") == 10 and outcomes.count("dup") == 30
    assert sorted([v.battle_id async for v in store.votes()]) == sorted(f"b{i}" for i in range(10))


async def test_reading_the_votes_holds_no_connection_while_the_reader_waits(database):
    # /api/votes.jsonl streams every vote to a client that may read as slowly as it likes:
    # holding a pooled connection meanwhile would let a few slow readers starve the store.
    store = VoteStore(database)
    for i in range(5):
        await finished_battle(store, f"b{i}")
        await store.record_vote(f"b{i}", "tie")
    reader = store.votes(page=2).__aiter__()
    first = await reader.__anext__()
    assert database.engine.pool.checkedout() == 0
    rest = [v.battle_id async for v in reader]
    assert [first.battle_id, *rest] == [f"b{i}" for i in range(5)]


async def test_unvoted_battles_are_pruned_after_their_age(database):
    store = VoteStore(database)
    await finished_battle(store, "old-voted", now=1000.0)
    await store.record_vote("old-voted", "tie")
    await finished_battle(store, "old-unvoted", now=1000.0)
    await finished_battle(store, "new-unvoted", now=5000.0)
    assert await store.prune_battles(older_than=2000.0) == 1
    with pytest.raises(BattleNotFound):
        await store.get_battle("old-unvoted")
    assert (await store.get_battle("old-voted")).vote == "tie"
    assert (await store.get_battle("new-unvoted")).sides["a"].answer == "hi"


def test_an_acknowledged_vote_survives_the_process_being_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"

    async def prepare() -> None:
        db = Database(url)
        await db.upgrade()
        await finished_battle(VoteStore(db))
        await db.dispose()

    asyncio.run(prepare())
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from gateway.arena.votes import VoteStore
        from gateway.store import Database
        asyncio.run(VoteStore(Database({url!r})).record_vote("b1", "model_a"))
        print("voted", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -9 and "voted" in proc.stdout, proc.stderr

    async def winners() -> list[str]:
        db = Database(url)
        try:
            return [v.winner async for v in VoteStore(db).votes()]
        finally:
            await db.dispose()

    assert asyncio.run(winners()) == ["model_a"]


async def test_sharing_a_battle_twice_at_once_gives_one_link(database):
    store = VoteStore(database)
    await finished_battle(store)
    await store.record_vote("b1", "tie")
    ids = await asyncio.gather(*[store.share(f"share-{i}", "battle", battle_id="b1") for i in range(4)])
    assert len(set(ids)) == 1 and ids[0].startswith("share-")


async def test_sides_a_dead_gateway_left_streaming_are_recovered_once_stale(database):
    """A side whose gateway died mid-stream: a regeneration gives back the result it replaced (and
    is not counted), a first answer ends as an error; a side still marked alive is left alone."""
    store = VoteStore(database)
    await finished_battle(store, "r1")
    await store.record_vote("r1", "tie")
    await store.regenerate("r1", ("a", "b"), limit=3, seed=42)
    await store.claim_side("r1", "a", lease=100, now=1000.0)  # held until 1100 (its gateway's lease)
    await store.claim_side("r1", "b", lease=100, now=1000.0)
    await store.touch_side("r1", "b", lease=100, now=2000.0)  # b's gateway is alive: held until 2100
    assert await store.recover_stale_sides("r1", now=1050.0) == []
    assert await store.recover_stale_sides("r1", now=1500.0) == ["a"]
    battle = await store.get_battle("r1")
    assert (battle.sides["a"].status, battle.sides["a"].answer, battle.sides["a"].tokens) == ("done", "hi", 5)
    assert battle.sides["b"].status == "streaming"
    assert battle.request["regenerated"] == {"a": 0, "b": 1}
    # b's gateway finishes after all; a's late finish does not overwrite what readers were shown.
    assert await store.finish_side("r1", "b", SideResult("done", "hello again", finish_reason="stop"))
    assert not await store.finish_side("r1", "a", SideResult("done", "too late", finish_reason="stop"))
    battle = await store.get_battle("r1")
    assert (battle.sides["a"].answer, battle.sides["b"].answer) == ("hi", "hello again")
    # The recovered side can be regenerated again; the vote still holds the answers it applied to.
    await store.regenerate("r1", ("a",), limit=3, seed=42)
    assert (await store.voted_turns("r1"))[-1]["a"] == "hi"

    await store.create_battle("r2", "m1", "m2", 1, REQUEST)
    await store.claim_side("r2", "a", lease=100, now=1000.0)
    assert await store.recover_stale_sides("r2", now=1500.0) == ["a"]
    side = (await store.get_battle("r2")).sides["a"]
    assert side.status == "error" and "restarted" in side.error


async def test_a_side_is_held_by_its_gateways_lease_not_by_a_readers_deadline(database):
    """During a handoff a reader may have a smaller answer deadline (or another clock) than the
    gateway streaming: the writer's lease, on the store's clock, decides alone."""
    store = VoteStore(database)
    reader = BattleManager(store, policy=ArenaPolicy(answer_deadline=10))
    await store.create_battle("l1", "m1", "m2", 1, REQUEST)
    # Claimed 100 s ago by a gateway whose deadline (its lease) is 300 s: still held.
    await store.claim_side("l1", "a", lease=300, now=time.time() - 100)
    assert (await reader.get("l1")).sides["a"].status == "streaming"
    # A lease that ran out (its gateway stopped renewing it) is ended by the same reader.
    await store.touch_side("l1", "a", lease=30, now=time.time() - 100)
    side = (await reader.get("l1")).sides["a"]
    assert side.status == "error" and "restarted" in side.error


async def test_a_side_that_ends_meanwhile_keeps_its_regeneration_count(database):
    """Of two stale sides read, the one its gateway finished before the recovery wrote is left
    alone, its regeneration still counted; only the side recovered is uncounted."""
    store = VoteStore(database)
    await finished_battle(store, "c1")
    await store.record_vote("c1", "tie")
    await store.regenerate("c1", ("a", "b"), limit=3, seed=42)
    for side in ("a", "b"):
        await store.claim_side("c1", side, lease=10, now=1000.0)
    stale = await store.stale_sides("c1")
    assert {r.side for r in stale} == {"a", "b"}
    assert await store.finish_side("c1", "a", SideResult("done", "new answer", finish_reason="stop"))
    assert await store.end_sides("c1", stale) == ["b"]
    battle = await store.get_battle("c1")
    assert battle.request["regenerated"] == {"a": 1, "b": 0}
    assert (battle.sides["a"].answer, battle.sides["b"].answer) == ("new answer", "hello")


@pytest.mark.parametrize("operation", ["follow_up", "regenerate", "recovery"])
async def test_request_rewrites_lock_the_battle_row(postgres, operation):
    """PostgreSQL (READ COMMITTED): a write of `battles.request` made while another transaction
    holds the row is read before it is changed, so neither is lost."""
    db = Database(postgres.create_database())
    await db.upgrade()
    store = VoteStore(db)
    try:
        await finished_battle(store, "k1")
        if operation != "follow_up":
            await store.record_vote("k1", "tie")
        if operation == "recovery":
            await store.regenerate("k1", ("a",), limit=3, seed=42)
            await store.claim_side("k1", "a", lease=10, now=1000.0)
        async with db.engine.connect() as holder:
            await holder.begin()
            row = (await holder.execute(select(battles.c.request).where(battles.c.id == "k1")
                                        .with_for_update())).one()
            await holder.execute(update(battles).where(battles.c.id == "k1").values(
                request=json.dumps({**json.loads(row.request), "other": "kept"})))
            task = asyncio.ensure_future({"follow_up": lambda: store.add_turn("k1", "And then?"),
                                          "regenerate": lambda: store.regenerate("k1", ("b",), limit=3, seed=42),
                                          "recovery": lambda: store.recover_stale_sides("k1")}[operation]())

            async def waiting_on_lock() -> bool:
                async with db.read() as conn:
                    return bool((await conn.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))).scalar())

            await async_wait_until(waiting_on_lock, 10, what="the store's query waiting on the row lock")
            await holder.commit()
        await task
        request = (await store.get_battle("k1")).request
        assert request["other"] == "kept"
        assert {"follow_up": lambda: request["prompts"] == ["Say hi", "And then?"],
                "regenerate": lambda: request["regenerated"] == {"b": 1},
                "recovery": lambda: request["regenerated"] == {"a": 0}}[operation]()
    finally:
        await db.dispose()



async def test_a_reader_gets_the_battle_when_the_recovery_cannot_be_written(database_url):
    """A page view must not fail because the store refuses the recovery's write (a read-only
    PostgreSQL standby; SQLite locked by another writer): it shows the battle as read."""
    db = Database(database_url, busy_timeout=0.2)
    await db.upgrade()
    store = VoteStore(db)
    try:
        await store.create_battle("w1", "m1", "m2", 1, REQUEST)
        await store.claim_side("w1", "a", lease=10, now=1000.0)  # stale
        if db.is_sqlite:
            locker = sqlite3.connect(db.url.database, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
        else:
            name = db.url.database
            async with db.engine.connect() as conn:
                await conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
                await conn.commit()
            await db.engine.dispose()
        with pytest.raises(Exception):
            await store.recover_stale_sides("w1")  # the store does refuse the write
        battle = await BattleManager(store).get("w1")
        assert battle.sides["a"].status == "streaming"
        if db.is_sqlite:
            locker.rollback()
            locker.close()
    finally:
        await db.dispose()
