"""BattleManager: fair draws, anonymous streams, timings and partial answers recorded.

The upstream here is an async generator of SSE bytes, the same contract as the gateway's
`upstream.stream_chat`; the browser tests drive the real one against real model services.
"""

import asyncio
import json
import random
from collections import Counter

import pytest

from gateway.arena.battles import BattleManager, BattleRequest, NameScrubber, pick_pair
from shared.sse import SseReader
from gateway.arena.votes import VoteStore
from shared.errors import ApiError

NAMES = ["smollm2-135m", "SmolLM2 135M Instruct", "gemma3-270m", "Gemma 3 270M (base)"]


def chunk(model: str, content: str | None = None, finish: str | None = None, **extra) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"id": f"chatcmpl-{model}-xyz", "object": "chat.completion.chunk", "created": 1, "model": model,
            "system_fingerprint": f"fp-{model}", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def upstream_of(parts: list[bytes], log: dict, delay: float = 0.0):
    def stream_chat(body: dict):
        log["body"] = body

        async def gen():
            try:
                for p in parts:
                    if delay:
                        await asyncio.sleep(delay)
                    yield p
            finally:
                log["closed"] = True
        return gen()
    return stream_chat


@pytest.fixture
async def manager(database):
    return BattleManager(VoteStore(database), weights={"smollm2-135m": 1.0, "gemma3-270m": 1.0},
                         known_names=NAMES, rng=random.Random(3))


def test_pick_pair_follows_weights_and_needs_two_models():
    rng = random.Random(0)
    weights = {"a": 3.0, "b": 1.0, "c": 0.0}
    firsts = Counter(pick_pair(["a", "b", "c"], weights, rng)[0] for _ in range(4000))
    assert set(firsts) == {"a", "b"}  # weight 0 never battles
    assert 0.70 < firsts["a"] / 4000 < 0.80  # 3:1
    assert all(x != y for x, y in (pick_pair(["a", "b", "d"], weights, rng) for _ in range(200)))
    with pytest.raises(ApiError) as err:
        pick_pair(["a", "c"], weights, rng)
    assert err.value.status == 503 and err.value.code == "not_enough_models"


def test_sse_reader_handles_any_chunking():
    data = chunk("m", "Hel") + chunk("m", "lo") + b"data: [DONE]\n\n"
    for size in (1, 3, 7, len(data)):
        reader = SseReader()
        out = [p for i in range(0, len(data), size) for p in reader.feed(data[i:i + size])]
        assert len(out) == 3 and out[-1] == "[DONE]"


async def test_a_battle_streams_anonymously_and_records_timings(manager):
    battle = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi", temperature=0.2,
                                                                           max_tokens=2000),
                            {"smollm2-135m": 1024, "gemma3-270m": 512})
    assert battle.request["max_tokens"] == 512  # the tighter limit, for both
    for side in ("a", "b"):
        model = battle.model(side)
        parts = [chunk(model, None, None) , chunk(model, "I am ") , chunk(model, f"{model} hello"),
                 chunk(model, None, "stop"),
                 chunk(model, None, None, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
                 b"data: [DONE]\n\n"]
        log: dict = {}
        stream = await manager.open_side(battle.id, side, upstream_of(parts, log, delay=0.01))
        out = b"".join([c async for c in stream]).decode()
        body = log["body"]
        assert (body["model"], body["seed"], body["temperature"], body["max_tokens"]) == (model, battle.seed, 0.2, 512)
        assert log["closed"]
        events = [json.loads(line[6:]) for line in out.split("\n\n") if line.startswith("data: {")]
        label = "Model A" if side == "a" else "Model B"
        # Only the answer itself may carry a name; nothing around it does.
        envelope = json.dumps([{k: v for k, v in e.items() if k != "choices"} for e in events])
        for name in NAMES + ["fp-", "xyz"]:
            assert name.lower() not in envelope.lower()
        assert {e.get("model") for e in events if "model" in e} == {label}
        text = "".join(c["delta"].get("content", "") for e in events for c in e.get("choices", []))
        assert text == f"I am {model} hello"
        assert out.endswith("data: [DONE]\n\n")
        stats = events[-1]
        assert stats["object"] == "arena.side.stats" and stats["tokens"] == 4 and stats["status"] == "done"
    stored = await manager.store.get_battle(battle.id)
    assert stored.finished
    a = stored.sides["a"]
    assert a.tokens == 4 and a.finish_reason == "stop" and 0.005 < a.ttft < a.total
    assert a.tokens_per_second == pytest.approx(3 / (a.total - a.ttft), rel=0.2)
    vote = await manager.store.record_vote(battle.id, "model_a")
    assert vote.answer_a == f"I am {battle.model_a} hello"


async def test_stopping_a_side_keeps_the_partial_answer_and_closes_upstream(manager):
    battle = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Count"))
    model = battle.model("a")
    log: dict = {}
    parts = [chunk(model, f"{i} ") for i in range(100)]
    stream = await manager.open_side(battle.id, "a", upstream_of(parts, log, delay=0.01))
    got = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()
    assert log["closed"] and len(got) == 3
    side = (await manager.store.get_battle(battle.id)).sides["a"]
    assert side.status == "stopped" and side.answer == "0 1 2 "


async def test_upstream_failures_are_scrubbed_and_recorded(manager):
    battle = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    model_a, model_b = battle.model("a"), battle.model("b")

    def refusing(body):
        async def gen():
            raise ApiError(503, f"No ready instance of model '{body['model']}' (SmolLM2 135M Instruct).")
            yield b""
        return gen()

    with pytest.raises(ApiError) as err:
        await manager.open_side(battle.id, "a", refusing)
    assert err.value.status == 503
    assert model_a not in err.value.message and "SmolLM2" not in err.value.message
    assert "Model A" in err.value.message
    assert (await manager.store.get_battle(battle.id)).sides["a"].status == "error"

    error_event = b'data: {"error": {"message": "' + model_b.encode() + b' crashed", "type": "server_error"}}\n\n'
    stream = await manager.open_side(battle.id, "b", upstream_of([chunk(model_b, "par"), error_event], {}))
    out = b"".join([c async for c in stream]).decode()
    assert model_b not in out and "Model B failed: Model B crashed" in out
    side = (await manager.store.get_battle(battle.id)).sides["b"]
    assert side.status == "error" and side.answer == "par"
    assert (await manager.store.get_battle(battle.id)).finished


async def test_unknown_side_is_refused(manager):
    battle = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    with pytest.raises(ApiError) as err:
        await manager.open_side(battle.id, "c", upstream_of([], {}))
    assert err.value.status == 404


def test_scrubber_replaces_longest_names_first():
    scrub = NameScrubber(["gemma3-270m", "Gemma 3 270M (base)"])
    assert scrub("Gemma 3 270M (base) aka GEMMA3-270M", "Model B") == "Model B aka Model B"
