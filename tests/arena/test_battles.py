"""BattleManager: fair draws, anonymous streams, timings and partial answers recorded.

The upstream here is an async generator of SSE bytes, the same contract as the gateway's
`upstream.stream_chat`; the browser tests drive the real one against real model services.
"""

import asyncio
import json
import random
import time
from collections import Counter

import pytest

from gateway.arena.battles import BattleManager, BattleRequest, NameScrubber, WordChunker, pick_pair
from gateway.arena.votes import BattleNotFinished, VoteStore
from shared.catalogue import ArenaPolicy
from shared.sse import SseReader
from shared.errors import ApiError

NAMES = ["smollm2-135m", "SmolLM2 135M Instruct", "gemma3-270m", "Gemma 3 270M (base)"]


def chunk(model: str, content: str | None = None, finish: str | None = None, **extra) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {"id": f"chatcmpl-{model}-xyz", "object": "chat.completion.chunk", "created": 1, "model": model,
            "system_fingerprint": f"fp-{model}", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def upstream_of(parts: list[bytes], log: dict, delay: float = 0.0):
    def stream_chat(body: dict, info: dict | None = None):
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


def test_word_chunker_cuts_at_words_or_fixed_positions_never_at_tokens():
    for tokens in (["Hel", "lo wor", "ld, how", " are", " you?"], ["Hello", " world,", " how are you?"],
                   list("Hello world, how are you?")):
        chunker = WordChunker()
        pieces = [p for t in tokens for p in chunker.feed(t)] + [chunker.flush()]
        assert pieces == ["Hello ", "world, ", "how ", "are ", "you?"]
    cjk = "日本語の文章には空白がありません" * 5  # 80 characters, no space
    for size in (1, 3, 7):
        chunker = WordChunker()
        pieces = [p for i in range(0, len(cjk), size) for p in chunker.feed(cjk[i:i + size])]
        assert [len(p) for p in pieces] == [32, 32] and "".join(pieces) + chunker.flush() == cjk


def test_sse_reader_handles_any_chunking():
    data = chunk("m", "Hel") + chunk("m", "lo") + b"data: [DONE]\n\n"
    for size in (1, 3, 7, len(data)):
        reader = SseReader()
        out = [p for i in range(0, len(data), size) for p in reader.feed(data[i:i + size])]
        assert len(out) == 3 and out[-1] == "[DONE]"


async def test_a_battle_streams_anonymously_and_records_timings(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi", temperature=0.2,
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
        stream = await manager.open_side(battle.id, side, upstream_of(parts, log, delay=0.01), token)
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
        done = events[-1]
        # The end of the side says how it ended and nothing measurable: no timing, no token count.
        assert done == {"object": "arena.side.done", "side": side, "status": "done", "finish_reason": "stop"}
        assert "usage" not in out and "tokens" not in out
        # Text comes as words, never cut at the model's token boundaries ("I am " arrived as one token).
        pieces = [c["delta"]["content"] for e in events for c in e.get("choices", []) if c["delta"].get("content")]
        assert pieces == ["I ", "am ", f"{model} ", "hello"]
    stored = await manager.store.get_battle(battle.id)
    assert stored.finished
    a = stored.sides["a"]
    assert a.tokens == 4 and a.finish_reason == "stop" and 0.005 < a.ttft < a.total
    assert a.tokens_per_second == pytest.approx(3 / (a.total - a.ttft), rel=0.2)
    vote = await manager.store.record_vote(battle.id, "model_a")
    assert vote.answer_a == f"I am {battle.model_a} hello"


async def test_stopping_a_side_keeps_the_partial_answer_and_closes_upstream(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Count"))
    model = battle.model("a")
    log: dict = {}
    parts = [chunk(model, f"{i} ") for i in range(100)]
    stream = await manager.open_side(battle.id, "a", upstream_of(parts, log, delay=0.01), token)
    got = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()
    assert log["closed"] and len(got) == 3
    side = (await manager.store.get_battle(battle.id)).sides["a"]
    # The answer keeps all the model said, the word not yet shown included.
    assert side.status == "stopped" and side.answer == "0 1 2 3 "


async def test_a_side_closed_before_its_first_chunk_is_recorded_and_releases_everything(manager):
    # The browser left while the model was still reading the prompt: the server never reads
    # the relay, only closes it. The side must not stay "streaming" for ever (no vote, no
    # follow-up), the upstream request must close, and the live load must not stay hidden.
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Count"))
    log: dict = {}
    stream = await manager.open_side(battle.id, "a", upstream_of([chunk(battle.model("a"), "0 ")] * 5, log), token)
    assert manager.activity.streaming == 1
    await stream.aclose()
    assert log["closed"] and manager.activity.streaming == 0
    assert (await manager.store.get_battle(battle.id)).sides["a"].status == "stopped"


async def test_an_event_nested_past_the_json_parsers_limit_is_skipped_like_any_garbage(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    model = battle.model("a")
    parts = [chunk(model, "Hello "), b"data: " + b"[" * 6000 + b"\n\n", chunk(model, "there", "stop")]
    stream = await manager.open_side(battle.id, "a", upstream_of(parts, {}), token)
    out = b"".join([c async for c in stream]).decode()
    assert "Hello there" in "".join(json.loads(p)["choices"][0]["delta"].get("content", "")
                                    for p in SseReader().feed(out.encode()) if p.startswith("{\"id"))
    side = (await manager.store.get_battle(battle.id)).sides["a"]
    assert (side.status, side.answer) == ("done", "Hello there")


async def test_upstream_failures_are_scrubbed_and_recorded(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    model_a, model_b = battle.model("a"), battle.model("b")

    def refusing(body, info=None):
        async def gen():
            raise ApiError(503, f"No ready instance of model '{body['model']}' (SmolLM2 135M Instruct).")
            yield b""
        return gen()

    with pytest.raises(ApiError) as err:
        await manager.open_side(battle.id, "a", refusing, token)
    assert err.value.status == 503
    assert model_a not in err.value.message and "SmolLM2" not in err.value.message
    assert "Model A" in err.value.message
    assert (await manager.store.get_battle(battle.id)).sides["a"].status == "error"

    error_event = b'data: {"error": {"message": "' + model_b.encode() + b' crashed", "type": "server_error"}}\n\n'
    stream = await manager.open_side(battle.id, "b", upstream_of([chunk(model_b, "par"), error_event], {}), token)
    out = b"".join([c async for c in stream]).decode()
    assert model_b not in out and "Model B failed: Model B crashed" in out
    side = (await manager.store.get_battle(battle.id)).sides["b"]
    assert side.status == "error" and side.answer == "par"
    assert (await manager.store.get_battle(battle.id)).finished


async def test_unknown_side_is_refused(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    with pytest.raises(ApiError) as err:
        await manager.open_side(battle.id, "c", upstream_of([], {}), token)
    assert err.value.status == 404


def test_scrubber_replaces_longest_names_first():
    scrub = NameScrubber(["gemma3-270m", "Gemma 3 270M (base)"])
    assert scrub("Gemma 3 270M (base) aka GEMMA3-270M", "Model B") == "Model B aka Model B"


async def answer_both(manager, battle, token, text="Fine answer. "):
    for side in "ab":
        model = battle.model(side)
        stream = await manager.open_side(battle.id, side, upstream_of(
            [chunk(model, text), chunk(model, None, "stop"), b"data: [DONE]\n\n"], {}), token)
        async for _ in stream:
            pass


async def test_only_the_client_with_the_token_can_stream_follow_up_and_vote(manager):
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"),
                                         client="addr:1.1.1.1")
    assert battle.client == "addr:1.1.1.1" and token not in str(await manager.store.get_battle(battle.id))
    for wrong in (None, "", "guess", token + "x"):
        with pytest.raises(ApiError) as err:
            await manager.open_side(battle.id, "a", upstream_of([], {}), wrong)
        assert err.value.status == 403 and err.value.code == "invalid_battle_token"
        with pytest.raises(ApiError):
            await manager.vote(battle.id, wrong, "tie", "addr:2.2.2.2")
        with pytest.raises(ApiError):
            await manager.follow_up(battle.id, wrong, "more?")
    await answer_both(manager, battle, token)
    vote, _ = await manager.vote(battle.id, token, "tie", "addr:1.1.1.1")
    assert vote.client == "addr:1.1.1.1" and vote.categories == []


async def test_follow_ups_give_each_side_its_own_conversation_up_to_the_limit(database):
    manager = BattleManager(VoteStore(database), known_names=NAMES, rng=random.Random(3),
                            policy=ArenaPolicy(max_turns=2, max_prompt_chars=50, max_conversation_chars=500))
    with pytest.raises(ApiError) as err:
        await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="x" * 51))
    assert (err.value.status, err.value.code, err.value.param) == (400, "prompt_too_long", "prompt")
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi", system="Be kind."))
    with pytest.raises(BattleNotFinished):
        await manager.follow_up(battle.id, token, "And then?")
    await answer_both(manager, battle, token, "First answer. ")
    battle = await manager.follow_up(battle.id, token, "And then?")
    for side in "ab":
        assert manager.upstream_body(battle, side)["messages"] == [
            {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "First answer. "}, {"role": "user", "content": "And then?"}]
    await answer_both(manager, battle, token, "Second answer. ")
    with pytest.raises(ApiError) as err:
        await manager.follow_up(battle.id, token, "Third?")
    assert (err.value.status, err.value.code) == (409, "too_many_turns")
    vote, _ = await manager.vote(battle.id, token, "model_b", None)
    assert [t["user"] for t in vote.turns] == ["Hi", "And then?"] and vote.categories == ["multi_turn"]
    assert vote.answer_a == "Second answer. "


def hanging_after(parts: list[bytes]):
    """An upstream that sends `parts`, then never another byte (a frozen model)."""
    def stream_chat(body, info=None):
        async def gen():
            for p in parts:
                yield p
            await asyncio.Event().wait()
        if info is not None:
            info["instance_id"] = "frozen-1"
        return gen()
    return stream_chat


async def test_a_side_that_hangs_fails_at_the_deadline_and_cannot_be_voted(database):
    manager = BattleManager(VoteStore(database), known_names=NAMES, rng=random.Random(3),
                            policy=ArenaPolicy(answer_deadline=0.5))
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    model_a = battle.model("a")
    stream = await manager.open_side(battle.id, "a", hanging_after([chunk(model_a, "Hello ")]), token)
    out = b"".join([c async for c in stream]).decode()
    error = json.loads(next(line[6:] for line in out.splitlines() if '"error"' in line))["error"]
    assert error["code"] == "answer_deadline" and error["message"].startswith("Model A gave no answer for")
    side = (await manager.store.get_battle(battle.id)).sides["a"]
    assert side.status == "error" and side.answer == "Hello "
    # Before the first chunk: the side's request fails with an HTTP error, recorded the same way.
    with pytest.raises(ApiError) as err:
        await manager.open_side(battle.id, "b", hanging_after([]), token)
    assert err.value.status == 504 and err.value.code == "answer_deadline"
    with pytest.raises(Exception) as refused:
        await manager.vote(battle.id, token, "model_a", None)
    assert getattr(refused.value, "code", None) == "not_a_contest"


async def test_a_side_fails_as_soon_as_its_instance_leaves_service(database):
    in_service = {"frozen-1": True}
    manager = BattleManager(VoteStore(database), known_names=NAMES, rng=random.Random(3),
                            policy=ArenaPolicy(answer_deadline=600),
                            serving=lambda model, instance: in_service.get(instance, True))
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Hi"))
    stream = await manager.open_side(battle.id, "b", hanging_after([chunk(battle.model("b"), "Hi ")]), token)
    in_service["frozen-1"] = False  # the health monitor took the instance out
    out = b"".join([c async for c in stream]).decode()
    assert '"code":"instance_unhealthy"' in out and "Model B stopped responding" in out
    assert (await manager.store.get_battle(battle.id)).sides["b"].status == "error"


def test_a_draining_instance_is_still_in_service_for_its_battle_sides():
    """Draining finishes the work an instance has (a retiring or scaled-down instance): a side it
    is answering goes on; an instance gone or unhealthy fails the side."""
    from gateway.arena.routes import serving_check
    from gateway.instances import Instance, InstanceRegistry, InstanceState
    from shared.catalogue import load_catalogue

    registry = InstanceRegistry(load_catalogue())
    instance = registry.add(Instance("i1", "smollm2-135m", "http://127.0.0.1:9", state=InstanceState.DRAINING))
    serving = serving_check(registry)
    assert serving("smollm2-135m", "i1")
    instance.state = InstanceState.UNHEALTHY
    assert not serving("smollm2-135m", "i1")
    assert not serving("smollm2-135m", "gone")


async def test_a_side_ended_elsewhere_while_it_streamed_is_not_said_done(manager):
    """Another gateway ended the side as stale (its lease ran out) while this one streamed it:
    the answer is not kept, so the browser gets an error, not "done"."""
    battle, token = await manager.create(["smollm2-135m", "gemma3-270m"], BattleRequest(prompt="Count"))
    model = battle.model("a")
    gate = asyncio.Event()

    def stream_chat(body, info=None):
        async def gen():
            yield chunk(model, "one ")
            yield chunk(model, "two ")  # "one " is shown once the next word begins
            await gate.wait()
            yield chunk(model, "three", "stop")
        return gen()

    stream = await manager.open_side(battle.id, "a", stream_chat, token)
    first = await stream.__anext__()
    assert b'"one "' in first
    assert await manager.store.recover_stale_sides(battle.id, now=time.time() + 3600) == ["a"]
    gate.set()
    out = b"".join([c async for c in stream]).decode()
    events = [json.loads(p) for p in SseReader().feed(out.encode()) if p.startswith("{")]
    assert not any(e.get("object") == "arena.side.done" for e in events)
    assert events[-1]["error"]["code"] == "side_recovered"
    side = (await manager.store.get_battle(battle.id)).sides["a"]
    assert side.status == "error" and "restarted" in side.error


async def test_a_side_whose_request_cannot_be_built_is_left_pending_and_unwatched(manager):
    """A failure building the upstream request (here a stored request without its temperature)
    claims nothing, starts no watchdog and leaves no side counted as streaming."""
    battle = await manager.store.create_battle("broken", "smollm2-135m", "gemma3-270m", 1,
                                               {"prompt": "Hi", "max_tokens": 8})
    before = set(asyncio.all_tasks())
    with pytest.raises(KeyError):
        await manager.open_side(battle.id, "a", upstream_of([], {}))
    assert manager.activity.streaming == 0
    assert set(asyncio.all_tasks()) - before == set()
    assert (await manager.store.get_battle(battle.id)).sides["a"].status == "pending"
