"""A synthetic arena in the gateway's store: 'verbose' writes long answers, and long answers win.

90 counted votes over three models and four kinds of prompt (code, math, creative writing,
plain), 70 of them from one client (a flood); and one vote whose answer names a model.
"""

from __future__ import annotations

import asyncio
import random

from gateway.arena.votes import SideResult, VoteStore
from gateway.store import Database
from gateway.store.database import sqlite_url

PROMPTS = ["Write a python function that sorts a list", "What is 17 * 23?", "Write a poem about rain",
           "What is the capital of Peru?"]


def fill_store(path) -> None:
    """The gateway's store (SQLite at `path`, migrated) with the synthetic votes."""
    asyncio.run(_fill(path))


async def _fill(path) -> None:
    db = Database(sqlite_url(path))
    await db.upgrade()
    try:
        await _fill_votes(VoteStore(db))
    finally:
        await db.dispose()


async def _fill_votes(store: VoteStore) -> None:
    rng = random.Random(7)
    models = ["verbose", "terse", "middle"]
    for i in range(90):
        a, b = rng.sample(models, 2)
        prompt = PROMPTS[i % len(PROMPTS)]
        battle = await store.create_battle(f"b{i}", a, b, 1, {"prompt": prompt, "system": "", "temperature": 0.7,
                                                        "max_tokens": 64})
        words = {m: {"verbose": 120, "middle": 50, "terse": 12}[m] + rng.randint(0, 10) for m in (a, b)}
        for side, model in (("a", a), ("b", b)):
            await store.claim_side(battle.id, side)
            await store.finish_side(battle.id, side, SideResult(
                status="done", answer="word " * words[model], ttft=0.1, total=1.0, tokens=words[model],
                tokens_per_second={"verbose": 40.0, "middle": 90.0, "terse": 130.0}[model], finish_reason="stop"))
        longer = "model_a" if words[a] > words[b] else "model_b"
        winner = longer if rng.random() < 0.85 else ("tie" if rng.random() < 0.5 else
                                                     ("model_b" if longer == "model_a" else "model_a"))
        # One client casts 70 of the votes within the hour: a flood for the admin to see.
        await store.record_vote(battle.id, winner, client="addr:203.0.113.66" if i < 70 else f"addr:198.51.100.{i}")
    # A vote whose answer names its model: recorded, not counted.
    battle = await store.create_battle("flagged", "verbose", "terse", 1, {"prompt": "Who are you?", "system": "",
                                                                   "temperature": 0.7, "max_tokens": 64})
    for side in "ab":
        await store.claim_side("flagged", side)
        await store.finish_side("flagged", side, SideResult(status="done", answer="I am Gemma, a model." if side == "a"
                                                      else "Hello there.", tokens=5, finish_reason="stop"))
    await store.record_vote("flagged", "model_a")
