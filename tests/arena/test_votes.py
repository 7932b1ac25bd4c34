"""VoteStore: one vote per battle, concurrent voters, durability across a crash."""

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gateway.arena.votes import (AlreadyVoted, BattleNotFinished, BattleNotFound, SideBusy, SideResult,
                                 VoteStore)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REQUEST = {"prompt": "Say hi", "system": "Be brief.", "temperature": 0.5, "max_tokens": 32}


def finished_battle(store: VoteStore, battle_id: str = "b1") -> None:
    store.create_battle(battle_id, "m1", "m2", 42, REQUEST)
    for side, answer in (("a", "hi"), ("b", "hello")):
        store.claim_side(battle_id, side)
        store.finish_side(battle_id, side, SideResult("done", answer, ttft=0.1, total=0.5, tokens=5,
                                                      tokens_per_second=10.0, finish_reason="stop"))


def test_a_vote_stores_the_whole_battle(tmp_path):
    store = VoteStore(tmp_path / "arena.sqlite3")
    finished_battle(store)
    vote = store.record_vote("b1", "model_b")
    assert (vote.model_a, vote.model_b, vote.winner, vote.prompt, vote.system_prompt) == \
        ("m1", "m2", "model_b", "Say hi", "Be brief.")
    assert (vote.answer_a, vote.answer_b, vote.tokens_a, vote.ttft_b, vote.seed) == ("hi", "hello", 5, 0.1, 42)
    assert [v.to_dict() for v in store.votes()] == [vote.to_dict()]
    assert store.get_battle("b1").vote == "model_b"
    with sqlite3.connect(tmp_path / "arena.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_refusals(tmp_path):
    store = VoteStore(tmp_path / "arena.sqlite3")
    with pytest.raises(BattleNotFound):
        store.record_vote("nope", "tie")
    with pytest.raises(BattleNotFound):
        store.claim_side("nope", "a")
    store.create_battle("b1", "m1", "m2", 1, REQUEST)
    store.claim_side("b1", "a")
    with pytest.raises(SideBusy):
        store.claim_side("b1", "a")
    with pytest.raises(BattleNotFinished):
        store.record_vote("b1", "tie")
    store.finish_side("b1", "a", SideResult("stopped", "partial"))
    store.claim_side("b1", "b")
    store.finish_side("b1", "b", SideResult("error", "", error="boom"))
    store.record_vote("b1", "tie")
    with pytest.raises(AlreadyVoted):
        store.record_vote("b1", "model_a")
    with pytest.raises(sqlite3.IntegrityError):
        finished_battle(store, "b2")
        store.record_vote("b2", "draw")
    assert store.vote_count() == 1


def test_concurrent_voters_get_exactly_one_vote_per_battle(tmp_path):
    path = tmp_path / "arena.sqlite3"
    store = VoteStore(path)
    for i in range(10):
        finished_battle(store, f"b{i}")
    outcomes: list[str] = []
    lock = threading.Lock()

    def voter(n: int) -> None:
        own = VoteStore(path)  # as another process would: its own connections
        for i in range(10):
            try:
                own.record_vote(f"b{i}", ("model_a", "model_b", "tie")[n % 3])
                result = "ok"
            except AlreadyVoted:
                result = "dup"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=voter, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 10 and outcomes.count("dup") == 50
    assert sorted(v.battle_id for v in store.votes()) == sorted(f"b{i}" for i in range(10))


def test_an_acknowledged_vote_survives_the_process_being_killed(tmp_path):
    path = tmp_path / "arena.sqlite3"
    finished_battle(VoteStore(path))
    script = textwrap.dedent(f"""
        import os, signal
        from gateway.arena.votes import VoteStore
        VoteStore({str(path)!r}).record_vote("b1", "model_a")
        print("voted", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -9 and "voted" in proc.stdout, proc.stderr
    assert [v.winner for v in VoteStore(path).votes()] == ["model_a"]
