"""The RAM prompt cache: a conversation whose slot was taken by another one gets its KV restored
from RAM on its next turn, with the same greedy answer as recomputing it."""

from __future__ import annotations

import httpx
import pytest

from services.prompt_cache import PromptCache
from tests.harness import start_service

MODEL = "smollm2-135m"
DOC_A = "Notes on the harbour: boats bring fish at dawn, traders argue over prices, gulls circle. " * 6
DOC_B = "Notes on the mountain: goats climb the rocks, snow melts in spring, hikers rest by a hut. " * 6


def test_cache_is_bounded_lru_and_longer_sequences_supersede_their_prefixes():
    cache = PromptCache(max_bytes=250, min_tokens=2)
    cache.put([1, 2, 3], b"x" * 100)
    cache.put([1, 2, 3, 4, 5], b"y" * 100)  # holds [1, 2, 3] whole: replaces it
    assert len(cache) == 1 and cache.size_bytes == 100
    assert not cache.wants([1, 2, 3]) and not cache.wants([7]) and cache.wants([1, 2, 9])
    cache.put([7, 8], b"z" * 100)
    entry, length = cache.best_match([1, 2, 3, 4, 6])
    assert entry.tokens == (1, 2, 3, 4, 5) and length == 4
    cache.record(entry, length)          # a hit makes [1..5] the most recently used
    cache.put([9, 9, 9], b"w" * 100)     # over 250 bytes: the least recently used ([7, 8]) goes
    assert cache.best_match([7, 8])[0] is None and cache.best_match([1, 2])[1] == 2
    assert cache.size_bytes == 200 and cache.report().hits == 1
    cache.record(None, 0)
    assert cache.report().misses == 1
    off = PromptCache(0)
    off.put([1, 2, 3], b"x")
    assert not off.enabled and len(off) == 0


@pytest.fixture(scope="module")
def services():
    # One slot each, so a second conversation always takes the first one's slot.
    cached = start_service(MODEL, "--parallel", "1")
    try:
        plain = start_service(MODEL, "--parallel", "1", env={"ARENA_MODEL_SMOLLM2_135M__PROMPT_CACHE_MB": "0"})
    except BaseException:
        cached.stop()
        raise
    yield cached, plain
    cached.stop()
    plain.stop()


def _ask(client: httpx.Client, url: str, messages: list[dict]) -> dict:
    response = client.post(url + "/v1/chat/completions",
                           json={"model": MODEL, "messages": messages, "max_tokens": 16, "temperature": 0})
    assert response.status_code == 200, response.text
    return response.json()


def _conversation(client: httpx.Client, url: str) -> tuple[dict, dict, dict]:
    first = [{"role": "system", "content": DOC_A}, {"role": "user", "content": "What comes at dawn?"}]
    one = _ask(client, url, first)
    other = _ask(client, url, [{"role": "system", "content": DOC_B}, {"role": "user", "content": "What melts?"}])
    grown = first + [{"role": "assistant", "content": one["choices"][0]["message"]["content"]},
                     {"role": "user", "content": "Who argues?"}]
    return one, other, _ask(client, url, grown)


def test_an_evicted_conversation_is_restored_from_ram_with_the_same_greedy_answer(services):
    cached, plain = services
    with httpx.Client(timeout=120) as client:
        one, other, two = _conversation(client, cached.url)
        plain_one, plain_other, plain_two = _conversation(client, plain.url)
        details = client.get(cached.url + "/health/details").json()["prompt_cache"]
        metrics = client.get(cached.url + "/metrics").text
        plain_details = client.get(plain.url + "/health/details").json()["prompt_cache"]

    restored = two["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert restored >= one["usage"]["prompt_tokens"] - 1, (restored, one["usage"])
    # Without the cache the other conversation's document replaced it: only the template's
    # first tokens are shared.
    assert plain_two["usage"]["prompt_tokens_details"]["cached_tokens"] < 10
    for with_cache, without in ((one, plain_one), (other, plain_other), (two, plain_two)):
        assert with_cache["choices"][0]["message"]["content"] == without["choices"][0]["message"]["content"]

    assert details["hits"] == 1 and details["restored_tokens"] == restored
    assert details["misses"] >= 2 and details["entries"] >= 1
    assert 0 < details["size_bytes"] <= details["max_bytes"] == 256 * 2**20
    assert f'arena_service_prompt_cache_hits_total{{model="{MODEL}"}} 1.0' in metrics
    assert f'arena_service_prompt_cache_entries{{model="{MODEL}"}} {float(details["entries"])}' in metrics
    assert plain_details["max_bytes"] == 0 and plain_details["entries"] == plain_details["hits"] == 0
