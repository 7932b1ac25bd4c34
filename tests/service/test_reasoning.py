"""Reasoning: the thinking block goes to `reasoning_content`, streamed and not.

The embedded models do not think on their own. This test serves SmolLM2 with a chat template
of a thinking model in the DeepSeek R1 style (the generation prompt opens `<think>`), preceded
by two worked examples that close their thinking with `</think>` before answering: at
temperature 0 the 135M model copies that pattern, so the service really generates a thinking
block, its end marker and an answer. The test checks the precondition (the end marker is in the
raw text) so it fails rather than passes vacuously if the model stops writing it.
"""

from __future__ import annotations

import pytest
from openai import OpenAI

from services.reasoning import ReasoningMarkers, ReasoningSplitter
from tests.harness import start_service

MODEL = "smollm2-135m"
THINKING_TEMPLATE = """<|im_start|>user
What is 3+3?<|im_end|>
<|im_start|>assistant
<think>
Three plus three makes six.
</think>
The answer is 6.<|im_end|>
<|im_start|>user
Name a yellow fruit.<|im_end|>
<|im_start|>assistant
<think>
Bananas are yellow.
</think>
A banana.<|im_end|>
{% for message in messages -%}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endfor -%}
<|im_start|>assistant
<think>
"""
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def thinking_service():
    proc = start_service(MODEL, "--parallel", "2", env={"ARENA_MODEL_SMOLLM2_135M__CHAT_TEMPLATE": THINKING_TEMPLATE})
    yield proc
    proc.stop()


@pytest.fixture
def thinker(thinking_service):
    return OpenAI(base_url=thinking_service.url + "/v1", api_key="unused", max_retries=0, timeout=600)


def test_thinking_goes_to_reasoning_content(thinker):
    inline = thinker.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0,
                                             extra_body={"reasoning_format": "none"})
    assert "</think>" in inline.choices[0].message.content  # the precondition: the model closed its thinking
    split = thinker.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0)
    message = split.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning.strip() and message.content.strip()
    for text in (reasoning, message.content):
        assert "<think>" not in text and "</think>" not in text
    chunks = list(thinker.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0,
                                                  stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    streamed_reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    streamed_content = "".join(d.content or "" for d in deltas)
    assert (streamed_reasoning, streamed_content) == (reasoning, message.content)
    kinds = [("reasoning" if (d.model_extra or {}).get("reasoning_content") else "content")
             for d in deltas if d.content or (d.model_extra or {}).get("reasoning_content")]
    assert kinds == sorted(kinds, key=lambda k: k == "content")  # all the thinking first, then the answer


def test_max_tokens_counts_the_thinking(thinker):
    response = thinker.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "length" and response.usage.completion_tokens == 3
    assert choice.message.model_extra["reasoning_content"] and not choice.message.content


def test_reasoning_content_through_the_gateway(thinking_service, gateway_in_front):
    client = gateway_in_front(thinking_service.url)
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40, temperature=0)
    assert whole.choices[0].message.model_extra["reasoning_content"].strip()
    assert "</think>" not in whole.choices[0].message.content


def split_all(text: str, markers: ReasoningMarkers, step: int) -> tuple[str, str]:
    splitter = ReasoningSplitter(markers)
    thinking = answer = ""
    for i in range(0, len(text), step):
        t, a = splitter.push(text[i:i + step], final=False)
        thinking, answer = thinking + t, answer + a
    t, a = splitter.push("", final=True)
    return thinking + t, answer + a


@pytest.mark.parametrize("step", [1, 2, 5, 100])
def test_splitter_on_the_marker_variants(step):
    think = ReasoningMarkers("<think>", "</think>")
    assert split_all("<think>\nhmm, 4.\n</think>\n\nFour.", think, step) == ("\nhmm, 4.\n", "Four.")
    assert split_all("  <think>a</think>b", think, step) == ("a", "b")
    assert split_all("No thinking at all.", think, step) == ("", "No thinking at all.")
    assert split_all("<thin", think, step) == ("", "<thin")  # an unfinished marker at the end is text
    inside = ReasoningMarkers("<think>", "</think>", starts_inside=True)
    assert split_all("working it out</think>The answer.", inside, step) == ("working it out", "The answer.")
    assert split_all("cut short by max_tokens", inside, step) == ("cut short by max_tokens", "")
    mistral = ReasoningMarkers.for_template("{{ '[THINK]' }}", "")
    assert split_all("[THINK]x[/THINK]y", mistral, step) == ("x", "y")


def test_markers_follow_the_template():
    assert ReasoningMarkers.for_template("... <think> ...", "<|im_start|>assistant\n<think>\n").starts_inside
    assert not ReasoningMarkers.for_template("... <think> ...", "<|im_start|>assistant\n").starts_inside
