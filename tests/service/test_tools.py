"""Tool calling through the official OpenAI SDK against a real `arena serve smollm2-135m` on both
engines (streamed and not, each `tool_choice`, a round trip with a `tool` message, and through
the gateway), plus the markup parser on the shapes other models write."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from services.tool_stream_bench import forced_call_pieces
from services.tools import ToolCallStream, plan_tools
from tests.harness import assert_openai_error

MODEL = "smollm2-135m"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a timezone.",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
                   "required": ["timezone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def client(engine_service) -> openai.OpenAI:
    """A call is some 40 constrained tokens: on a loaded machine that takes longer than the
    package's default client waits."""
    return openai.OpenAI(base_url=engine_service.url + "/v1", api_key="unused", max_retries=0, timeout=600)


def test_required_tool_choice_returns_a_valid_call(client):
    # One call: with parallel calls allowed the model may write more calls than the budget holds.
    response = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                              parallel_tool_calls=False, max_tokens=60, temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str) and arguments["unit"] in ("celsius", "fahrenheit")


def test_named_tool_choice_calls_that_function_once(client):
    response = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    assert set(json.loads(calls[0].function.arguments)) == {"timezone"}


def test_streamed_tool_call_sends_the_name_first_then_argument_fragments(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                                 parallel_tool_calls=False, max_tokens=60, temperature=0,
                                                 stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "get_weather"
    assert deltas[0].function.arguments == ""
    fragments = [d.function.arguments for d in deltas[1:]]
    assert len(fragments) > 1 and all(d.id is None and d.function.name is None for d in deltas[1:])
    assert {d.index for d in deltas} == {0}
    assert set(json.loads("".join(fragments))) == {"city", "unit"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=60, temperature=0)
    assert whole.choices[0].message.tool_calls[0].function.arguments == "".join(fragments)


def test_auto_answers_in_content_when_the_model_writes_no_call(client):
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                              tools=[WEATHER], max_tokens=16, temperature=0)
    choice = response.choices[0]
    assert choice.message.tool_calls is None and choice.message.content
    assert choice.finish_reason in ("stop", "length")


def test_auto_parses_a_call_the_model_writes(client):
    # The 135M model rarely calls on its own: a response_format grammar makes it write a bare JSON
    # call (Llama 3.x's shape), which "auto" must recognise as a call.
    schema = {"type": "object", "properties": {"name": {"const": "get_weather"},
                                               "arguments": WEATHER["function"]["parameters"]},
              "required": ["name", "arguments"]}
    kwargs = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto", max_tokens=60, temperature=0,
                  response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": schema}})
    response = client.chat.completions.create(**kwargs)
    assert response.choices[0].finish_reason == "tool_calls"
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == \
        response.choices[0].message.tool_calls[0].function.arguments
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


def test_auto_keeps_json_that_is_not_a_call_as_content(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Describe a cat as JSON."}], tools=[WEATHER],
                  max_tokens=40, temperature=0, response_format={"type": "json_object"})
    response = client.chat.completions.create(**kwargs)
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content.lstrip().startswith("{")
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True)
                       if c.choices)
    assert streamed == response.choices[0].message.content


def test_a_full_round_trip_with_a_tool_message(client):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=60, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
               {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none",
                                            max_tokens=24, temperature=0)
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None
    without = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",
                                             max_tokens=1, temperature=0)
    # The call and its result were in the prompt: at least the tokens of the arguments and the result.
    assert answer.usage.prompt_tokens >= without.usage.prompt_tokens + 20


def test_bad_tools_are_refused_with_the_parameter_named(engine_service):
    url = engine_service.url + "/v1/chat/completions"
    body = {"model": MODEL, "messages": ASK, "max_tokens": 8}
    bad_name = {"type": "function", "function": {"name": "no spaces allowed", "parameters": {}}}
    assert_openai_error(httpx.post(url, json={**body, "tools": [bad_name]}), 400, param="tools[0].function.name")
    unknown = {"type": "function", "function": {"name": "nope"}}
    assert_openai_error(httpx.post(url, json={**body, "tools": [WEATHER], "tool_choice": unknown}), 400,
                        param="tool_choice")
    deep: dict = {"type": "object"}
    for _ in range(20):
        deep = {"type": "object", "properties": {"x": deep}}
    deep_tool = {"type": "function", "function": {"name": "deep", "parameters": deep}}
    assert_openai_error(httpx.post(url, json={**body, "tools": [deep_tool], "tool_choice": "required"}), 400,
                        param="tools[0].function.parameters")


REPORT = {"type": "function", "function": {
    "name": "write_report", "description": "Write a long report.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}}


def test_a_long_forced_call_streams_the_arguments_of_the_whole_answer(smollm):
    """Hundreds of tokens of arguments, each piece read once as it comes (the parser used to read
    the whole call again at every token): the streamed fragments make up the whole answer's."""
    client = openai.OpenAI(base_url=smollm.url + "/v1", api_key="unused", max_retries=0, timeout=600)
    kwargs = dict(model=MODEL, tools=[REPORT], tool_choice="required", parallel_tool_calls=False, temperature=0,
                  messages=[{"role": "user", "content": "Write a very long, detailed report about Paris."}])
    client.chat.completions.create(**kwargs, max_tokens=1)  # both answers below start from the same cached prompt
    whole = client.chat.completions.create(**kwargs, max_tokens=400)
    assert whole.usage.completion_tokens == 400 and whole.choices[0].finish_reason == "length"
    arguments = whole.choices[0].message.tool_calls[0].function.arguments
    assert arguments.startswith('{') and '"text": "' in arguments[:12] and len(arguments) > 1000
    chunks = list(client.chat.completions.create(**kwargs, max_tokens=400, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "write_report" and len(deltas) > 100
    assert "".join(d.function.arguments or "" for d in deltas) == arguments


def test_a_required_tool_call_through_the_gateway(engine_service, gateway_in_front):
    client = gateway_in_front(engine_service.url)
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                                 parallel_tool_calls=False, max_tokens=60, temperature=0, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas))["city"]


# ----- the parser, on markup other models write -----------------------------------------------

def stream_through(text: str, *, step: int = 1, tool_choice="auto") -> tuple[str, list[dict]]:
    parser = ToolCallStream(plan_tools([WEATHER, TIME], tool_choice, None))
    content, deltas = "", []
    for i in range(0, len(text), step):
        piece, calls = parser.push(text[i:i + step], final=False)
        content += piece
        deltas += calls
    piece, calls = parser.push("", final=True)
    return content + piece, parser.calls


@pytest.mark.parametrize("text", [
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>',
    '[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]',  # Mistral, its marker unprinted
    '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]<|/tool_call|>',
    '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}',  # Llama 3.x
])
@pytest.mark.parametrize("step", [1, 7])
def test_parser_reads_the_common_markups(text, step):
    content, calls = stream_through(text, step=step)
    assert content.strip() in ("", "Let me check.")
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == \
        [("get_weather", {"city": "Oslo", "unit": "celsius"})]


@pytest.mark.parametrize("text", ["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {broken",
                                  "{\"not\": \"a call\"}", "Plain words, a < sign and a [bracket]."])
def test_parser_gives_back_what_does_not_parse_as_content(text):
    content, calls = stream_through(text, step=3)
    assert calls == [] and content == text


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
@pytest.mark.parametrize("step", [1, 9])
def test_parallel_calls_get_their_own_index_and_id(tool_choice, step):
    text = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "CET"}}\n</tool_call>')
    parser = ToolCallStream(plan_tools([WEATHER, TIME], tool_choice, True))
    deltas = []
    for i in range(0, len(text), step):
        deltas += parser.push(text[i:i + step], final=False)[1]
    deltas += parser.push("", final=True)[1]
    assert [c["function"]["name"] for c in parser.calls] == ["get_weather", "get_time"]
    assert len({c["id"] for c in parser.calls}) == 2
    for index, call in enumerate(parser.calls):
        mine = [d for d in deltas if d["index"] == index]
        assert mine[0]["function"]["name"] == call["function"]["name"] and mine[0]["id"] == call["id"]
        assert "".join(d["function"]["arguments"] for d in mine) == call["function"]["arguments"]
        json.loads(call["function"]["arguments"])


@pytest.mark.parametrize("parallel", [False, True])
def test_a_forced_call_of_thousands_of_tokens_reads_the_same_in_pieces_as_whole(parallel):
    pieces = forced_call_pieces(16_000)
    text = "".join(pieces)
    calls = 2 if parallel else 1
    if parallel:
        pieces = pieces + ["\n"] + pieces
    streamed = ToolCallStream(plan_tools([REPORT], "required", parallel))
    deltas = [d for piece in pieces for d in streamed.push(piece, final=False)[1]]
    deltas += streamed.push("", final=True)[1]
    at_once = ToolCallStream(plan_tools([REPORT], "required", parallel))
    at_once.push("".join(pieces), final=True)
    written = text[text.index('"arguments": ') + len('"arguments": '):text.rindex("}")]
    assert [c["function"]["arguments"] for c in streamed.calls] == [written] * calls
    assert [c["function"]["arguments"] for c in at_once.calls] == [written] * calls
    for index in range(calls):
        assert "".join(d["function"]["arguments"] for d in deltas if d["index"] == index) == written
    assert json.loads(written)["text"].startswith("the archive held")


def test_model_output_nested_past_the_json_parser_s_limit_is_text_not_a_crash():
    from services.tools import parse_calls

    assert parse_calls("[" * 100_000) is None


def test_the_tool_stream_benchmark_reports_each_length(tmp_path):
    """`arena bench --mode toolstream` (no model: the parser alone); its speed is not asserted."""
    import subprocess
    import sys

    from tests.harness import PROJECT_ROOT

    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "shared.cli", "bench", "--mode", "toolstream",
                             "--tool-stream-tokens", "50,200", "--json", str(out)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lengths = json.loads(out.read_text())["toolstream"]["lengths"]
    assert [level["tokens"] for level in lengths] == [50, 200]
    assert all(level["seconds"] > 0 and level["us_per_token"] > 0 for level in lengths)
    assert "us/token" in result.stdout
