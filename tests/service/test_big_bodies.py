"""Large request bodies are parsed and validated off the event loop, a bounded number at once
(`shared.body_parsing`): the process keeps answering meanwhile, and a flood gets 503s."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
import pytest

from services.big_body_bench import big_chat_body
from services.protocol import ChatCompletionRequest
from shared.body_parsing import BodyWork, parse_model_body
from shared.errors import ApiError
from tests.body_flood import JSON, flooding
from tests.harness import assert_openai_error, async_wait_until, wait_until

MODEL = "smollm2-135m"
PARSING = re.compile(rb"^arena_service_large_bodies_parsing (\S+)$", re.M)


def _error_of(work):
    try:
        work()
    except Exception as exc:  # the exception each way raises, compared by what is answered
        return type(exc).__name__, getattr(exc, "errors", lambda: None)(), getattr(exc, "detail", None)
    raise AssertionError("expected a refusal")


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"[" * 100_000, b'{"model": "m", "messages": [{"role": "x"}]}'])
def test_a_body_fails_the_same_in_a_worker_thread_as_in_place(raw):
    def parse(threshold: int):
        work = BodyWork(threshold_bytes=threshold)
        return asyncio.run(work.run(len(raw), parse_model_body, ChatCompletionRequest, raw, "application/json"))

    assert _error_of(lambda: parse(threshold=len(raw) + 1)) == _error_of(lambda: parse(threshold=0))


def test_beyond_max_parallel_a_large_body_is_refused_at_once():
    async def scenario():
        work = BodyWork(threshold_bytes=10, max_parallel=1)
        release = threading.Event()
        first = asyncio.create_task(work.run(100, release.wait, 30))
        await async_wait_until(lambda: work.running == 1, what="the first parse to start")
        with pytest.raises(ApiError) as refused:
            await work.run(100, len, b"x" * 100)
        assert (refused.value.status, refused.value.code) == (503, "server_busy")
        assert refused.value.headers == {"Retry-After": "1"}
        assert await work.run(5, len, b"small") == 5  # small bodies are never refused
        release.set()
        assert await first is True
        assert work.running == 0 and await work.run(100, len, b"x" * 100) == 100

    asyncio.run(scenario())


def test_the_service_answers_while_large_bodies_are_validated_and_refuses_a_flood(smollm):
    """Three clients send 4 MB bodies again and again, in turn refused for `max_tokens: 0` once
    validated, and valid (then refused for their length once their prompt is made). /metrics
    answers while a body is being parsed (on the event loop it could not), and a third body while
    two are parsed gets 503 `server_busy`; every other answer is the 400 of its kind."""
    bodies = [big_chat_body(MODEL), big_chat_body(MODEL, max_tokens=1)]
    small = httpx.post(smollm.url + "/v1/chat/completions", timeout=30, headers=JSON,
                       json={"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "hi"}]})
    expected = assert_openai_error(small, 400, "invalid_value", "max_tokens")
    def parsing_now() -> float:
        metrics = httpx.get(smollm.url + "/metrics", timeout=30).content
        return float(PARSING.search(metrics).group(1))

    with flooding(smollm.url + "/v1/chat/completions", bodies, clients=3) as flood:
        wait_until(lambda: parsing_now() >= 1, 120, what="an answer while a large body is being parsed")
        wait_until(flood.refused_or_failed, 120, what="a 503 while two are parsed")
    busy, others = flood.busy, flood.others
    error = assert_openai_error(busy[0], 503, "server_busy")
    assert error["type"] == "service_unavailable" and busy[0].headers["retry-after"] == "1"
    errors = [response.json()["error"] for response in others]
    assert all(error == expected or (response.status_code, error["code"]) == (
        400, "context_length_exceeded") for response, error in zip(others, errors)), errors
    assert parsing_now() == 0
