"""Every bad input gets OpenAI's error shape and the right status, and the service keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import assert_openai_error

MODEL = "smollm2-135m"


def post(service, path: str, **kwargs) -> httpx.Response:
    return httpx.post(service.url + path, timeout=60, **kwargs)




def chat(**overrides):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **overrides}


def test_unknown_model_is_404_model_not_found(smollm):
    assert_openai_error(post(smollm, "/v1/chat/completions", json=chat(model="gpt-9")), 404, "model_not_found", "model")
    assert_openai_error(post(smollm, "/v1/completions", json={"model": "nope", "prompt": "x"}), 404, "model_not_found")
    assert_openai_error(httpx.get(smollm.url + "/v1/models/nope"), 404, "model_not_found")


def test_malformed_json_is_400(smollm):
    response = post(smollm, "/v1/chat/completions", content=b'{"model": "smollm2-135m", "messages": [',
                    headers={"content-type": "application/json"})
    assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("body, param", [
    (chat(max_tokens="many"), "max_tokens"),
    (chat(temperature=[1]), "temperature"),
    (chat(temperature=3.5), "temperature"),
    (chat(top_p=0), "top_p"),
    (chat(messages="hello"), "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
    (chat(stream="sometimes"), "stream"),
    (chat(n=17), "n"),
    (chat(max_tokens=0), "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_wrong_types_and_ranges_are_400_naming_the_parameter(smollm, body, param):
    assert_openai_error(post(smollm, "/v1/chat/completions", json=body), 400, param=param)


def test_prompt_longer_than_the_context_is_context_length_exceeded(smollm):
    long_text = "word " * 4000
    response = post(smollm, "/v1/chat/completions", json=chat(messages=[{"role": "user", "content": long_text}]))
    assert_openai_error(response, 400, "context_length_exceeded")


def test_max_tokens_above_the_configured_limit_is_400(smollm):
    assert_openai_error(post(smollm, "/v1/chat/completions", json=chat(max_tokens=100_000)), 400, "invalid_value",
                        "max_tokens")


def test_unsupported_response_format_and_content_are_400(smollm):
    assert_openai_error(post(smollm, "/v1/chat/completions", json=chat(response_format={"type": "xml"})), 400,
                        param="response_format")
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    assert_openai_error(post(smollm, "/v1/chat/completions", json=chat(messages=[{"role": "user", "content": image}])),
                        400, "unsupported_content")


def test_unknown_route_and_wrong_method_are_openai_shaped(smollm):
    assert_openai_error(httpx.get(smollm.url + "/v1/nothing-here"), 404)
    assert_openai_error(httpx.get(smollm.url + "/v1/chat/completions"), 405)


def test_service_still_answers_after_bad_input(smollm):
    response = post(smollm, "/v1/chat/completions", json=chat(temperature=0))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] is not None


def test_instance_secret_guards_the_api_but_not_health():
    from tests.harness import start_service

    proc = start_service(MODEL, "--parallel", "1", env={"ARENA_INSTANCE_SECRET": "s3cret"})
    try:
        assert httpx.get(proc.url + "/health").status_code == 200
        assert_openai_error(post(proc, "/v1/chat/completions", json=chat()), 401, "invalid_instance_secret")
        assert_openai_error(post(proc, "/v1/chat/completions", json=chat(), headers={"X-Arena-Instance-Secret": "no"}),
                            401)
        ok = post(proc, "/v1/chat/completions", json=chat(), headers={"X-Arena-Instance-Secret": "s3cret"})
        assert ok.status_code == 200
    finally:
        proc.stop()
