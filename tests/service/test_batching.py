"""Continuous batching: concurrent requests decode together without changing their answers,
cancellations free slots, a full queue answers 503 at once, prefixes are reused, nothing leaks."""

from __future__ import annotations

import asyncio
import json
import os
import random

import httpx
import pytest

from tests.harness import assert_openai_error, start_service, wait_until

MODEL = "smollm2-135m"
PROMPTS = [
    "Write a haiku about autumn.",
    "What is the boiling point of water?",
    "List three fruits.",
    "Explain what a cat is.",
    "Tell me a joke about computers.",
    "Describe the colour blue.",
    "Why is the sky blue?",
    "Name a famous painter.",
]


def chat_body(prompt: str, max_tokens: int, **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, **extra}


async def complete(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    response = await client.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


async def stream(client: httpx.AsyncClient, url: str, body: dict, allow_queue_full: bool = False) -> dict | None:
    """A streamed answer; None when refused because the queue is full (if that is allowed)."""
    text, finish, usage = [], None, None
    async with client.stream("POST", url + "/v1/chat/completions", timeout=300,
                             json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        if allow_queue_full and response.status_code == 503:
            await response.aread()
            assert_openai_error(response, 503, "queue_full")
            assert int(response.headers["Retry-After"]) >= 1
            return None
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text.append(choice["delta"].get("content") or "")
                finish = choice["finish_reason"] or finish
    return {"text": "".join(text), "finish_reason": finish, "usage": usage}


async def wait_for_load(url: str, active: int, queued: int | None = None, timeout: float = 30.0) -> dict:
    """Wait until /health/details reports `active` slots (and `queued` requests) and return that
    report; fail on timeout. The wait runs in a thread, so this loop's streams keep flowing."""
    def reached() -> dict | None:
        details = httpx.get(url + "/health/details", timeout=5).json()
        return details if details["slots"]["active"] == active and queued in (None, details["queue"]["queued"]) else None

    return await asyncio.to_thread(wait_until, reached, timeout, what=f"{active} active, {queued} queued")


@pytest.fixture(scope="module")
def batch8():
    proc = start_service(MODEL, "--parallel", "8", "--max-queue", "8")
    yield proc
    proc.stop()


async def test_concurrent_greedy_answers_equal_the_same_requests_alone(batch8):
    async with httpx.AsyncClient() as client:
        alone = [(await complete(client, batch8.url, chat_body(p, 48)))["choices"][0]["message"]["content"]
                 for p in PROMPTS]
        together = await asyncio.gather(*(stream(client, batch8.url, chat_body(p, 48)) for p in PROMPTS))
    assert [r["text"] for r in together] == alone


async def test_mixed_lengths_stops_and_cancellations_under_load(batch8):
    """Every accepted request completes truthfully or fails with a clear error; none is cut short."""
    rng = random.Random(7)
    async with httpx.AsyncClient() as client:
        async def one(i: int):
            prompt = PROMPTS[i % len(PROMPTS)]
            max_tokens = rng.choice([1, 5, 17, 40])
            kind = i % 4
            if kind == 3:  # cancelled by the client after a few chunks
                async with client.stream("POST", batch8.url + "/v1/chat/completions", timeout=300,
                                         json={**chat_body(prompt, 200), "stream": True}) as response:
                    seen = 0
                    async for line in response.aiter_lines():
                        seen += line.startswith("data: {")
                        if seen >= 3:
                            break
                return ("cancelled", None, None)
            body = chat_body(prompt, max_tokens, stop=["."] if kind == 2 else None)
            result = await stream(client, batch8.url, body, allow_queue_full=True)
            return ("rejected" if result is None else "done", max_tokens, result)

        outcomes = await asyncio.gather(*(one(i) for i in range(24)))
    kinds = [kind for kind, _, _ in outcomes]
    assert kinds.count("done") >= 8 and kinds.count("cancelled") == 6, kinds
    for kind, max_tokens, result in outcomes:
        if kind != "done":
            continue
        tokens = result["usage"]["completion_tokens"]
        assert result["finish_reason"] in ("stop", "length")
        if result["finish_reason"] == "length":
            assert tokens == max_tokens, result
        else:
            assert tokens <= max_tokens
    # cancelled streams release their slots
    await wait_for_load(batch8.url, active=0, queued=0)


async def test_stop_strings_under_batching_are_never_emitted(batch8):
    async with httpx.AsyncClient() as client:
        results = await asyncio.gather(*(stream(client, batch8.url, chat_body(p, 60, stop=[" the", "."]))
                                         for p in PROMPTS))
    for result in results:
        assert " the" not in result["text"] and "." not in result["text"], result


async def test_cancelled_stream_frees_its_slot_within_a_step(batch8):
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", batch8.url + "/v1/chat/completions", timeout=60,
                                 json={**chat_body("Write a very long essay.", 900), "stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                    break
            busy = (await client.get(batch8.url + "/health/details")).json()["slots"]["active"]
            assert busy == 1
        await wait_for_load(batch8.url, active=0)


async def test_prompt_prefix_is_reused_from_the_cache(batch8):
    system = {"role": "system", "content": "You are a terse assistant who answers in one short sentence. " * 5}
    first = [system, {"role": "user", "content": "What is tea?"}]
    async with httpx.AsyncClient() as client:
        one = await complete(client, batch8.url, {**chat_body("", 8), "messages": first})
        grown = first + [{"role": "assistant", "content": one["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "And coffee?"}]
        two = await complete(client, batch8.url, {**chat_body("", 8), "messages": grown})
    cached = two["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= one["usage"]["prompt_tokens"] - 1, (cached, one["usage"])


async def test_full_queue_answers_503_with_retry_after_at_once():
    proc = start_service(MODEL, "--parallel", "1", "--max-queue", "1")
    try:
        async with httpx.AsyncClient() as client:
            busy = [asyncio.create_task(stream(client, proc.url, chat_body("Write a long story.", 120)))
                    for _ in range(2)]
            await wait_for_load(proc.url, active=1, queued=1)
            rejected = await client.post(proc.url + "/v1/chat/completions", json=chat_body("hi", 4), timeout=5)
            assert_openai_error(rejected, 503, "queue_full")
            assert int(rejected.headers["Retry-After"]) >= 1
            finished = await asyncio.gather(*busy)
        assert all(r["usage"]["completion_tokens"] == 120 or r["finish_reason"] == "stop" for r in finished)
    finally:
        proc.stop()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


async def test_memory_does_not_grow_across_500_requests(batch8):
    pid = int(httpx.get(batch8.url + "/health/details").json()["instance_id"].split("-")[-2])
    semaphore = asyncio.Semaphore(8)

    async def one(client, i):
        async with semaphore:
            body = chat_body(f"Say a word about number {i}.", 4 + i % 5)
            if i % 2:
                await stream(client, batch8.url, body)
            else:
                await complete(client, batch8.url, body)

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(one(client, i) for i in range(100)))  # warm up allocator and caches
        before = rss_kib(pid)
        await asyncio.gather(*(one(client, i) for i in range(100, 500)))
        after = rss_kib(pid)
    assert after - before < 20 * 1024, (before, after)  # < 20 MiB over 400 more requests
    assert os.path.exists(f"/proc/{pid}")


async def test_include_perf_reports_the_load_a_request_found():
    proc = start_service(MODEL, "--parallel", "1", "--max-queue", "2")
    try:
        async with httpx.AsyncClient() as client:
            first = asyncio.create_task(client.post(proc.url + "/v1/chat/completions", timeout=120,
                                                    json=chat_body("Write a long story.", 80, include_perf=True)))
            await wait_for_load(proc.url, active=1)
            second = await client.post(proc.url + "/v1/chat/completions", timeout=120,
                                       json=chat_body("Hi", 4, include_perf=True))
            await first
        perf = second.json()["perf"]
        assert perf["active_requests_at_arrival"] == 1 and perf["queued_requests_at_arrival"] == 0
        assert perf["queue_ms"] > 0
    finally:
        proc.stop()


async def test_non_streamed_request_abandoned_by_its_client_frees_its_slot(batch8):
    async with httpx.AsyncClient() as client:
        request = asyncio.create_task(client.post(batch8.url + "/v1/chat/completions", timeout=60,
                                                  json=chat_body("Write a very long essay.", 900)))
        await wait_for_load(batch8.url, active=1)
        request.cancel()  # closes the connection: the client is gone
        with pytest.raises(asyncio.CancelledError):
            await request
        await wait_for_load(batch8.url, active=0)
