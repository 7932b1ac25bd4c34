"""A model's sampling defaults from the catalogue (`sampling:`, set by the admin side's settings)
apply to the fields a request leaves out; a request's own values still win."""

from __future__ import annotations

from openai import OpenAI

from tests.harness import start_service

PROMPT = [{"role": "user", "content": "Invent a name for a new colour and describe it."}]


def test_the_catalogue_s_sampling_defaults_apply_when_a_request_says_nothing():
    proc = start_service("smollm2-135m", "--parallel", "2",
                         env={"ARENA_MODEL_SMOLLM2_135M__SAMPLING": "{temperature: 0, top_k: 1}"})
    try:
        client = OpenAI(base_url=proc.url + "/v1", api_key="unused", max_retries=0, timeout=120)

        def answer(**sampling) -> str:
            return client.chat.completions.create(model="smollm2-135m", messages=PROMPT, max_tokens=24,
                                                  **sampling).choices[0].message.content

        greedy = answer(temperature=0)
        # Different seeds, no temperature: the model's default (greedy) makes them the same answer.
        assert answer(seed=1) == answer(seed=2) == greedy
        # The request's own temperature wins over the default.
        hot = {answer(temperature=1.5, seed=s, extra_body={"top_k": 0}) for s in (1, 2, 3)}
        assert len(hot) > 1
    finally:
        proc.stop()
