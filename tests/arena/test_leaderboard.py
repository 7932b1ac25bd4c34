"""The leaderboard shows an interval only when a model has enough battles for it to mean something."""

from __future__ import annotations

from gateway.arena.leaderboard import MIN_BATTLES_FOR_INTERVAL, build_leaderboard
from gateway.arena.ratings import WINNER_A, WINNER_B
from gateway.arena.votes import Vote


def vote(i: int, winner: str) -> Vote:
    return Vote(id=i, battle_id=f"b{i}", created_at=float(i), winner=winner, model_a="x", model_b="y",
                prompt="p", system_prompt="", temperature=0.7, max_tokens=64, seed=1, answer_a="a", answer_b="b",
                status_a="done", status_b="done", ttft_a=0.1, ttft_b=0.2, total_a=1.0, total_b=2.0, tokens_a=10,
                tokens_b=20, tokens_per_second_a=10.0, tokens_per_second_b=20.0)


def test_a_single_vote_gives_no_interval():
    board = build_leaderboard([vote(1, WINNER_A)], {"x": "X", "y": "Y"})
    assert board["min_battles_for_interval"] == MIN_BATTLES_FOR_INTERVAL
    assert all(row["ci_low"] is None and row["ci_high"] is None for row in board["models"])
    assert board["models"][0]["model"] == "x"  # the rating itself is still there


def test_enough_battles_give_an_interval_around_the_rating():
    votes = [vote(i, WINNER_A if i % 3 else WINNER_B) for i in range(MIN_BATTLES_FOR_INTERVAL * 4)]
    board = build_leaderboard(votes, {"x": "X", "y": "Y"})
    for row in board["models"]:
        assert row["ci_low"] < row["ci_high"]
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]


def test_a_vote_on_an_answer_that_names_a_model_is_kept_out_of_the_ratings():
    from dataclasses import replace

    from gateway.arena.identity import IdentityFlagger

    flagger = IdentityFlagger({"x": ["SmolLM"], "y": ["Gemma"]})
    votes = [vote(i, WINNER_A) for i in range(6)] + [vote(i, WINNER_B) for i in range(6, 9)]
    plain = build_leaderboard(votes, {}, flagger=flagger)
    flagged = [replace(v, answer_b="As SmolLM, I say b") if v.winner == WINNER_B else v for v in votes]
    board = build_leaderboard(flagged, {}, flagger=flagger)
    assert board["votes"] == 9 and board["counted"] == 6 and board["excluded"] == {"identity": 3}
    rating = {m["model"]: m["rating"] for m in board["models"]}
    assert rating["x"] > {m["model"]: m["rating"] for m in plain["models"]}["x"]  # y's wins no longer count
    # A side that failed or said nothing is not a contest either.
    empty = build_leaderboard([replace(votes[0], answer_a=" ", status_a="stopped"),
                               replace(votes[1], status_b="error")], {}, flagger=flagger)
    assert empty["counted"] == 0 and empty["excluded"] == {"not_a_contest": 2}


async def test_a_leaderboard_is_rebuilt_at_most_every_max_age_seconds(tmp_path):
    from gateway.arena.routes import Arena
    from gateway.arena.settings import ArenaSettings
    from gateway.arena.votes import SideResult, VoteStore
    from gateway.store import Database
    from gateway.store.database import sqlite_url
    from shared.catalogue import load_catalogue

    # Off by default in tests (tests/conftest.py); served for 30 s by default in production.
    assert ArenaSettings.model_fields["leaderboard_max_age"].default == 30.0
    db = Database(sqlite_url(tmp_path / "store.sqlite3"))
    await db.upgrade()
    store = VoteStore(db)

    async def vote(battle_id: str) -> None:
        await store.create_battle(battle_id, "m", "n", 1, {"prompt": "hi", "system": "", "temperature": 0.7,
                                                          "max_tokens": 8})
        for side in "ab":
            await store.claim_side(battle_id, side)
            await store.finish_side(battle_id, side, SideResult(status="done", answer=f"answer {side}", tokens=2,
                                                                finish_reason="stop"))
        await store.record_vote(battle_id, "model_a")

    try:
        catalogue = load_catalogue()
        cached = Arena(catalogue, ArenaSettings(leaderboard_max_age=30, bootstrap_rounds=10), db)
        fresh = Arena(catalogue, ArenaSettings(leaderboard_max_age=0, bootstrap_rounds=10), db)
        await vote("b1")
        assert (await cached.leaderboard())["votes"] == 1 == (await fresh.leaderboard())["votes"]
        await vote("b2")
        assert (await cached.leaderboard())["votes"] == 1  # within max_age: the board is served as built
        assert (await fresh.leaderboard())["votes"] == 2
    finally:
        await db.dispose()
