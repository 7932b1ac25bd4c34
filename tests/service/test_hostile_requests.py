"""Requests made to hurt a model instance: each is refused with a clear 400 or 413, and the
instance keeps serving (issue 11, items 1, 2 and 7)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness import assert_openai_error
from tests.service.test_errors import chat, post


def schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def nested(depth: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def assert_still_serving(service) -> None:
    assert httpx.get(service.url + "/health", timeout=5).status_code == 200
    answer = post(service, "/v1/chat/completions", json=chat())
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] is not None


@pytest.mark.parametrize("schema, what", [
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 300_000_000}, "maxItems"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 100_000}, "minItems"),
    ({"type": "string", "maxLength": 10_000_000}, "maxLength"),
    ({"type": "string", "pattern": "^(a{200}){200}$"}, "pattern"),
    ({"type": "string", "pattern": "^a{1000000}$"}, "pattern"),
    (nested(200), "nested"),
    ({"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 40}
                                       for i in range(600)}}, "bytes"),
])
def test_a_schema_too_large_for_a_grammar_is_a_400_and_the_service_keeps_serving(smollm, schema, what):
    response = post(smollm, "/v1/chat/completions", json=chat(response_format=schema_format(schema)))
    error = assert_openai_error(response, 400, "schema_too_large", "response_format")
    assert what in error["message"]
    assert_still_serving(smollm)


def test_a_remote_reference_is_refused_not_fetched(smollm):
    schema = {"$ref": "https://127.0.0.1:9/schema.json"}
    response = post(smollm, "/v1/chat/completions", json=chat(response_format=schema_format(schema)))
    assert_openai_error(response, 400, "invalid_value", "response_format")


def test_a_bounded_schema_still_constrains_the_answer(smollm):
    schema = {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3}
    response = post(smollm, "/v1/chat/completions",
                    json=chat(response_format=schema_format(schema), max_tokens=60, temperature=0))
    assert response.status_code == 200, response.text
    values = json.loads(response.json()["choices"][0]["message"]["content"])
    assert isinstance(values, list) and 2 <= len(values) <= 3 and all(isinstance(v, bool) for v in values)


def test_a_json_nesting_bomb_is_a_400(smollm):
    response = post(smollm, "/v1/chat/completions", content=b"[" * 100_000,
                    headers={"content-type": "application/json"})
    assert_openai_error(response, 400)
    assert_still_serving(smollm)


def test_bodies_over_the_limit_are_413_while_read(smollm):
    big = b" " * (5 * 1024 * 1024)
    assert_openai_error(post(smollm, "/v1/chat/completions", content=big), 413, "request_too_large")

    def pieces():
        for _ in range(512):
            yield b" " * (16 * 1024)
    assert_openai_error(post(smollm, "/v1/completions", content=pieces()), 413, "request_too_large")
    assert_still_serving(smollm)


@pytest.mark.parametrize("calls", ["x", [{"function": "s"}], [{"function": {"arguments": "{}"}}]])
def test_tool_calls_of_the_wrong_shape_in_the_history_are_a_400(smollm, calls):
    body = chat(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": calls},
                          {"role": "user", "content": "Again"}])
    assert_openai_error(post(smollm, "/v1/chat/completions", json=body), 400)
    assert_still_serving(smollm)
