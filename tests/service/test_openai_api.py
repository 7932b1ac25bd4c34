"""The model service through the official OpenAI SDK: chat and completions, streamed or not, on
both engines (llama-cpp-python in process, and a llama-server child)."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

MODEL = "smollm2-135m"


@pytest.fixture
def client(engine_service) -> OpenAI:
    return OpenAI(base_url=engine_service.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_completion_with_real_usage(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 5
    assert 0 < response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_max_completion_tokens_is_honoured(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count from one to fifty in words."}],
        max_completion_tokens=5, temperature=0)
    assert response.usage.completion_tokens == 5
    assert response.choices[0].finish_reason == "length"


def test_streamed_chat_matches_whole_answer_and_reports_usage(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Say something about the sea."}],
                  max_tokens=24, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    usage_chunks = [c for c in chunks if c.usage]
    assert len(usage_chunks) == 1 and not usage_chunks[0].choices
    assert usage_chunks[0].usage.completion_tokens == whole.usage.completion_tokens
    assert usage_chunks[0].usage.prompt_tokens == whole.usage.prompt_tokens


def test_plain_completion_streamed_and_not(client):
    whole = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert whole.choices[0].text
    assert whole.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == whole.choices[0].text


def test_stop_string_ends_the_answer_and_is_never_emitted(client):
    base = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0)
    text = base.choices[0].text
    assert " 6" in text, text  # the model counts on; stop at the sixth number
    stopped = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 6"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(" 6")]
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=" 6", stream=True) if c.choices)
    assert streamed == stopped.choices[0].text


def test_seed_makes_sampling_repeatable(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Invent a name for a cat."}],
                  max_tokens=16, temperature=1.0, seed=1234)
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_sampling_parameters_are_accepted(client):
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0.7, top_p=0.9,
        presence_penalty=0.5, frequency_penalty=0.5, seed=7,
        extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1})
    assert response.usage.completion_tokens > 0


def test_include_perf_reports_timings(engine_service):
    smollm = engine_service
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0,
            "include_perf": True}
    perf = httpx.post(smollm.url + "/v1/chat/completions", json=body, timeout=60).json()["perf"]
    assert perf["queue_ms"] >= 0 and perf["ttft_ms"] > 0 and perf["generation_ms"] >= 0
    assert perf["completion_tokens"] >= 1
    assert perf["active_requests_at_arrival"] >= 0 and perf["queued_requests_at_arrival"] >= 0
    with httpx.stream("POST", smollm.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    assert '"perf"' in lines[-1]


def test_json_object_response_format_gives_valid_json(client):
    import json

    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}],
        max_tokens=80, temperature=0, response_format={"type": "json_object"})
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_json_schema_response_format_follows_the_schema(client):
    import json

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer"}}, "required": ["name", "age"]}
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me a person."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    data = json.loads(response.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int) and isinstance(data["name"], str)


def test_gemma_base_model_answers_through_its_transcript_template(gemma):
    body = {"model": "gemma3-270m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24, "temperature": 0}
    answer = httpx.post(gemma.url + "/v1/chat/completions", json=body, timeout=60).json()
    text = answer["choices"][0]["message"]["content"]
    assert "Paris" in text
    assert "Question:" not in text


def test_gemma_answers_a_question_written_over_several_lines(gemma):
    body = {"model": "gemma3-270m", "messages": [{"role": "user", "content": "Name three colors.\nOne per line."}],
            "max_tokens": 48, "temperature": 0}
    answer = httpx.post(gemma.url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert answer["finish_reason"] == "stop"
    assert answer["message"]["content"].strip()
    assert "Answer:" not in answer["message"]["content"]
