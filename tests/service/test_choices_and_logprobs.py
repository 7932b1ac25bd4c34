"""`n` > 1 choices, and log-probabilities, through the official OpenAI SDK, on both engines (in
process the prompt is prefilled once; llama-server prefills each choice's slot)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from openai import OpenAI

from shared.catalogue import load_catalogue
from shared.core_share import automatic_threads
from shared.model_files import resolve_model_file
from services.llama_backend import ContextShape, LlamaContext, LlamaModel

MODEL = "smollm2-135m"
STORY = [{"role": "user", "content": "Invent a name for a new fruit and describe its taste."}]


@pytest.fixture
def client(engine_service) -> OpenAI:
    return OpenAI(base_url=engine_service.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_n_choices_each_with_its_own_seed(client):
    many = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=16, temperature=1.0, seed=42, n=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    texts = [c.message.content for c in many.choices]
    assert len(set(texts)) == 3, texts
    # Choice i samples with seed + i from a copy of the prompt's KV: it is the answer a single
    # request with that seed gets.
    for index in (0, 2):
        alone = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=16, temperature=1.0,
                                               seed=42 + index)
        assert alone.choices[0].message.content == texts[index]
        assert alone.usage.prompt_tokens == many.usage.prompt_tokens  # the prompt is counted once


def test_n_choices_streamed_match_the_whole_answer(client):
    kwargs = dict(model=MODEL, messages=STORY, max_tokens=12, temperature=1.0, seed=7, n=2)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    for choice in whole.choices:
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks
                           if c.choices and c.choices[0].index == choice.index)
        assert streamed == choice.message.content
        finishes = [c.choices[0].finish_reason for c in chunks
                    if c.choices and c.choices[0].index == choice.index and c.choices[0].finish_reason]
        assert finishes == [choice.finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1 and usage[0].completion_tokens == whole.usage.completion_tokens


def test_usage_counts_the_prompt_once_and_every_choice_s_tokens(client):
    response = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=10, temperature=1.0, seed=3,
                                              n=3, logprobs=True)
    one = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=10, temperature=1.0, seed=3)
    assert response.usage.prompt_tokens == one.usage.prompt_tokens
    assert response.usage.completion_tokens == sum(len(c.logprobs.content) for c in response.choices)


def test_n_choices_with_logprobs_through_the_gateway(smollm, gateway_in_front):
    client = gateway_in_front(smollm.url)
    chunks = list(client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=8, temperature=1.0, seed=5,
                                                 n=2, logprobs=True, top_logprobs=2, stream=True))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        text = "".join(c.delta.content or "" for c in mine)
        entries = [e for c in mine if c.logprobs for e in c.logprobs.content]
        assert text and "".join(e.token for e in entries) == text
        assert all(len(e.top_logprobs) == 2 for e in entries)


def test_n_completions(client):
    response = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=1.0,
                                         seed=11, n=2)
    assert sorted(c.index for c in response.choices) == [0, 1]
    assert response.choices[0].text != response.choices[1].text


def test_n_above_the_slots_is_refused(client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=4, n=5)  # the fixture has 4 slots
    assert caught.value.body["param"] == "n"


@pytest.fixture(scope="module")
def reference():
    """The same GGUF loaded in this process in a context of the service's shape (the fixture's 4
    slots), decoded step by step without the scheduler or any sampler: the raw logits to compare
    the service's log-probabilities with."""
    catalogue = load_catalogue()
    spec = catalogue.model(MODEL)
    model = LlamaModel(resolve_model_file(spec, catalogue.fleet.model_cache_path()))
    ctx = LlamaContext(model, ContextShape(n_ctx_per_sequence=spec.n_ctx, n_sequences=4, n_batch=spec.n_batch,
                                           threads=spec.threads or automatic_threads()))
    return model, ctx


def log_softmax(row: np.ndarray) -> np.ndarray:
    shifted = row.astype(np.float64) - row.max()
    return shifted - math.log(np.exp(shifted).sum())


def test_completion_logprobs_are_the_log_softmax_of_each_step(client, reference):
    prompt = "The capital of France is"
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, logprobs=5)
    lp = response.choices[0].logprobs
    assert len(lp.tokens) == response.usage.completion_tokens == 6
    assert "".join(lp.tokens) == response.choices[0].text
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])

    model, ctx = reference
    tokens = model.tokenize(prompt, add_special=model.add_bos, parse_special=False)
    ctx.clear_sequence(0)
    step_tokens, position = tokens, 0
    for step in range(6):
        ctx.clear_batch()
        for i, token in enumerate(step_tokens):
            last = ctx.add_to_batch(token, position + i, 0, i == len(step_tokens) - 1)
        position += len(step_tokens)
        ctx.decode()
        expected = log_softmax(ctx.logits(last))
        chosen = int(expected.argmax())  # temperature 0: the sampled token is the most likely one
        assert model.token_bytes(chosen).decode("utf-8", "replace") == lp.tokens[step]
        assert lp.token_logprobs[step] == pytest.approx(expected[chosen], abs=1e-3)
        # Keyed by text, as OpenAI's legacy shape is: tokens of the same text share one key.
        by_text = {model.token_bytes(int(i)).decode("utf-8", "replace"): expected[i]
                   for i in np.argsort(-expected)[:5]}
        top = lp.top_logprobs[step]
        assert top.keys() == by_text.keys()
        assert [top[k] for k in by_text] == pytest.approx(list(by_text.values()), abs=1e-3)
        step_tokens = [chosen]


def test_chat_logprobs_with_top_alternatives_streamed_and_not(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0,
                  logprobs=True, top_logprobs=20)
    whole = client.chat.completions.create(**kwargs)
    content = whole.choices[0].logprobs.content
    assert "".join(entry.token for entry in content) == whole.choices[0].message.content
    for entry in content:
        assert entry.logprob <= 0
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        assert len(entry.top_logprobs) == 20
        values = [alt.logprob for alt in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the best alternative was sampled
        assert sum(math.exp(v) for v in values) <= 1.0001
    streamed = [entry for chunk in client.chat.completions.create(**kwargs, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in content]


def test_top_logprobs_above_twenty_is_refused(client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=4, logprobs=True, top_logprobs=21)
    assert caught.value.body["param"] == "top_logprobs"
