"""Requests made to hurt a model instance: each is refused with a clear 400 or 413, and the
instance keeps serving (issue 11, items 1, 2 and 7)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness import assert_openai_error, start_service
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


WEATHER = {"type": "function", "function": {"name": "f", "parameters": {
    "type": "object", "properties": {"a": {"type": "string"}}}}}


def tool_with(parameters: dict) -> list[dict]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


@pytest.mark.parametrize("body, param", [
    # each of these was a 500
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), "messages.0.content"),
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]), "messages.0.content"),
    (chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": ["f"]}}), "tool_choice"),
    (chat(tools=tool_with({"$ref": "#/missing"}), tool_choice="required"), "tools"),
    (chat(tools=tool_with({"$ref": "#"}), tool_choice="required"), "tools"),
    (chat(tools=tool_with({"type": "object", "description": "text",
                           "properties": {"a": {"$ref": "#/description/a"}}}), tool_choice="required"), "tools"),
])
def test_malformed_content_tool_choice_and_references_are_a_400(smollm, body, param):
    error = assert_openai_error(post(smollm, "/v1/chat/completions", json=body), 400)
    assert error["param"].startswith(param)
    assert_still_serving(smollm)


def test_history_call_arguments_nested_past_the_json_parser_s_limit_are_sent_as_text(smollm):
    """They were parsed to render the prompt, and a RecursionError was a 500."""
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                     "function": {"name": "f", "arguments": "[" * 1500}}]},
               {"role": "user", "content": "Again"}]
    for extra in ({}, {"tools": [WEATHER]}):
        response = post(smollm, "/v1/chat/completions", json=chat(messages=history, **extra))
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] > 100  # the text of the arguments is in the prompt


def test_tool_results_and_calls_with_content_parts_reach_the_prompt_as_their_text(smollm):
    """Parts were written into the prompt as a Python list's repr (`[{'type': 'text', ...}]`)."""
    def prompt_tokens(content) -> int:
        history = [{"role": "user", "content": "Weather?"},
                   {"role": "assistant", "content": content,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "c", "content": content}]
        response = post(smollm, "/v1/chat/completions", json=chat(messages=history, tools=[WEATHER], max_tokens=1))
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    text = "Sunny and 21 degrees."
    assert prompt_tokens([{"type": "text", "text": "Sunny and "}, {"type": "text", "text": "21 degrees."}]) == \
        prompt_tokens(text)


def test_unknown_field_names_with_control_characters_get_an_answer(smollm):
    """The names of ignored fields go back in a header; a CR, LF or NUL in one made the server
    drop the connection without answering."""
    for name in ("x\r\nSet-Cookie: a=b", "nul\x00byte", "del\x7f", "caf\u00e9"):
        response = post(smollm, "/v1/chat/completions", json={**chat(), name: 1})
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers
        shown = response.headers["x-arena-ignored-params"]
        assert shown.isascii() and shown.isprintable()
    assert_still_serving(smollm)


# A template as many GGUFs carry (Llama 2, Mistral, Gemma): it raises on turns that do not
# alternate, and writes an assistant message's reasoning before its content.
STRICT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message.reasoning_content %}{{ '<think>' + message.reasoning_content + '</think>' }}{% endif %}"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def strict_template_service():
    proc = start_service("smollm2-135m", "--parallel", "1",
                         env={"ARENA_MODEL_SMOLLM2_135M__CHAT_TEMPLATE": STRICT_TEMPLATE})
    yield proc
    proc.stop()


@pytest.mark.parametrize("body, param, code", [
    # the template's own check (already a 400)
    (chat(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]), "messages",
     "invalid_messages"),
    # both were 500s: a variable shadowing the template's functions, data of a type it does not add up
    (chat(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
          chat_template_kwargs={"raise_exception": "no"}), "chat_template_kwargs", "invalid_value"),
    (chat(chat_template_kwargs={"range": 3}), "chat_template_kwargs", "invalid_value"),
    (chat(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": 5},
                    {"role": "user", "content": "c"}]), "messages", "invalid_messages"),
])
def test_what_the_chat_template_cannot_render_is_a_400(strict_template_service, body, param, code):
    assert_openai_error(post(strict_template_service, "/v1/chat/completions", json=body), 400, code, param)
    assert_still_serving(strict_template_service)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", '{"model": "smollm2-135m", "prompt": "Hi \\ud800", "max_tokens": 2}', "prompt"),
    ("/v1/chat/completions", '{"model": "smollm2-135m", "max_tokens": 2, '
                             '"messages": [{"role": "user", "content": "Hi \\udfff"}]}', "messages"),
    ("/v1/chat/completions", '{"model": "smollm2-135m", "max_tokens": 2, "stop": ["\\ud800"], '
                             '"messages": [{"role": "user", "content": "Hi"}]}', "stop"),
])
def test_a_lone_surrogate_escape_is_a_400_on_either_engine(engine_service, path, body, param):
    """JSON can escape half of a UTF-16 pair; UTF-8 cannot encode it, and the tokenizer (or the
    body for llama-server) raised UnicodeEncodeError: a 500."""
    response = post(engine_service, path, content=body.encode(), headers={"content-type": "application/json"})
    assert_openai_error(response, 400, param=param)
    paired = body.replace("\\ud800", "\\ud83d\\ude00").replace("\\udfff", "\\ud83d\\ude00")
    response = post(engine_service, path, content=paired.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


def test_a_prompt_of_special_tokens_is_refused_without_tokenizing_it_all(smollm):
    """llama.cpp's tokenizer is quadratic in the special tokens written in the text: 300,000
    `<|im_end|>` (3 MB) held a worker thread for many minutes. They are refused from the first
    pieces counted (an answer in well under the client's minute)."""
    body = chat(messages=[{"role": "user", "content": "<|im_end|>" * 300_000}])
    error = assert_openai_error(post(smollm, "/v1/chat/completions", json=body), 400,
                                "context_length_exceeded")
    assert "at least" in error["message"]
    assert_still_serving(smollm)
