"""The service's surface around the completions: ignored parameters named in a header, its own
Prometheus metrics, interactive docs at /docs and /swagger-ui."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

MODEL = "smollm2-135m"


def body(**extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0,
            **extra}


def test_unknown_fields_are_accepted_and_named_in_a_header(client, smollm):
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
        extra_body={"mirostat": 2, "guided_choice": ["a"]}, user="someone")
    assert raw.headers["X-Arena-Ignored-Params"] == "guided_choice, mirostat, user"
    assert raw.parse().choices[0].message.content is not None
    with httpx.stream("POST", smollm.url + "/v1/chat/completions", json=body(stream=True, foo=1), timeout=120) as r:
        assert r.status_code == 200 and r.headers["X-Arena-Ignored-Params"] == "foo"
        assert list(r.iter_lines())[-2] == "data: [DONE]"
    plain = httpx.post(smollm.url + "/v1/chat/completions", json=body(), timeout=120)
    assert "X-Arena-Ignored-Params" not in plain.headers


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_tokens_cache_hits_and_latency(smollm):
    url = smollm.url
    before = samples(url)
    ok = ("arena_service_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "200")))
    bad = ("arena_service_requests_total", (("endpoint", "/v1/chat/completions"), ("status", "400")))
    prompt = "Repeat after me: the quick brown fox jumps over the lazy dog."
    first = httpx.post(url + "/v1/chat/completions", timeout=120,
                       json=body(messages=[{"role": "user", "content": prompt}])).json()
    again = httpx.post(url + "/v1/chat/completions", timeout=120,
                       json=body(messages=[{"role": "user", "content": prompt}], stream=True))
    assert again.status_code == 200
    assert httpx.post(url + "/v1/chat/completions", json=body(max_tokens=-1), timeout=30).status_code == 400
    after = samples(url)

    def grew(key) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew(ok) == 2 and grew(bad) == 1
    assert grew(("arena_service_prompt_tokens_total", ())) == 2 * first["usage"]["prompt_tokens"]
    assert grew(("arena_service_completion_tokens_total", ())) >= first["usage"]["completion_tokens"]
    assert grew(("arena_service_prefix_cache_hits_total", ())) >= 1  # the same prompt again
    assert grew(("arena_service_time_to_first_token_seconds_count", ())) == 2
    assert grew(("arena_service_time_per_output_token_seconds_count", ())) >= 1
    model = (("model", MODEL),)
    assert after[("arena_service_slots_total", model)] == 4
    assert after[("arena_service_slots_active", model)] == 0 and after[("arena_service_queued_requests", model)] == 0


def test_interactive_docs_at_docs_and_swagger_ui(smollm):
    for path in ("/docs", "/swagger-ui"):
        page = httpx.get(smollm.url + path, timeout=10)
        assert page.status_code == 200 and "swagger-ui" in page.text and "/openapi.json" in page.text
    assert "/v1/chat/completions" in httpx.get(smollm.url + "/openapi.json", timeout=10).json()["paths"]
