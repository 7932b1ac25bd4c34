"""The gateway parses a large /v1 body off its event loop, a bounded number at once
(`shared.body_parsing`): a flood of 4 MB bodies gets 503 `server_busy` beyond the bound, and
every other answer is the one a small body gets."""

from __future__ import annotations

import httpx
import pytest

from gateway.upstream import json_bytes
from services.big_body_bench import big_chat_body
from tests.body_flood import JSON, flooding
from shared.errors import ApiError
from tests.gateway.conftest import assert_openai_error, gateway_env, wait_until


def test_a_flood_of_large_bodies_is_refused_beyond_the_bound(tmp_path, gateways):
    gateway = gateways(gateway_env(tmp_path))
    url = gateway.url + "/v1/chat/completions"
    body = big_chat_body("no-such-model")  # parsed whole, then refused: no instance is needed
    expected = assert_openai_error(httpx.post(url, content=b'{"model": "no-such-model"}', headers=JSON, timeout=30),
                                   404, "model_not_found", "model")
    with flooding(url, [body], clients=4) as flood:
        wait_until(flood.refused_or_failed, 120, what="a 503 while two are parsed")
    busy, others = flood.busy, flood.others
    error = assert_openai_error(busy[0], 503, "server_busy")
    assert busy[0].headers["retry-after"] == "1"
    assert all(response.json()["error"] == expected for response in others), error
    assert httpx.get(gateway.url + "/health/live", timeout=10).status_code == 200


def test_a_body_too_deep_to_encode_again_is_the_client_s_400():
    # A large body is parsed in a worker thread, whose stack is shallower than the event loop's:
    # nesting that parsed there can be too deep to encode again on the loop (for "auto" or a
    # served model name). That is a 400, not a 500.
    body: dict = {"model": "auto"}
    inner = body
    for _ in range(5000):
        inner["more"] = {}
        inner = inner["more"]
    with pytest.raises(ApiError) as refused:
        json_bytes(body)
    assert (refused.value.status, refused.value.code) == (400, "invalid_json")
    assert json_bytes({"model": "auto", "messages": []}) == b'{"model": "auto", "messages": []}'
