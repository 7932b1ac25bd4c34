"""Tool calling: the request's `tools` and `tool_choice`, the prompt, the grammar that forces a
call, and the parser that turns the model's tool-call markup back into OpenAI's `tool_calls`.

Calls are written in the markup most open models use (Hermes, Qwen, SmolLM3 and others):

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

With `tool_choice` "required" or a named function, a grammar built from the functions' JSON
schemas forces exactly that shape, so even a 135M model returns a valid call. With "auto" the
model chooses; its answer is parsed for that markup, for Mistral's and Phi-4's list forms and
for a bare JSON call (Llama 3.x), and whatever does not parse stays content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_cpp.llama_grammar import SchemaConverter

from services.chat_template import message_text
from services.exceptions import InvalidParameter, SchemaTooLarge
from services.response_format import DEFAULT_LIMITS, check_json_schema

MAX_TOOLS = 64
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPEN, CLOSE = "<tool_call>", "</tool_call>"
# Openings of the markups the parser understands, in "auto" mode.
OPENINGS = (OPEN, "<|tool_call|>", "[TOOL_CALLS]", "<function_call>")


@dataclass(frozen=True)
class ToolPlan:
    """What a request asks of tools, checked: the functions, how they may be used."""

    tools: list[dict[str, Any]]
    choice: Literal["auto", "required", "named"]
    parallel: bool
    forced_name: str | None = None

    @property
    def functions(self) -> list[dict[str, Any]]:
        return [tool["function"] for tool in self.tools]

    @property
    def constrained(self) -> bool:
        return self.choice in ("required", "named")


def plan_tools(tools: list[Any] | None, tool_choice: Any, parallel_tool_calls: bool | None) -> ToolPlan | None:
    """Check `tools` and `tool_choice`; None when no tool may be called."""
    if tool_choice is not None and not tools and tool_choice != "none":
        raise InvalidParameter("tool_choice needs tools.", param="tool_choice")
    if not tools or tool_choice == "none":
        return None
    if len(tools) > MAX_TOOLS:
        raise InvalidParameter(f"At most {MAX_TOOLS} tools per request.", param="tools")
    checked, names = [], set()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidParameter("Each tool must be {\"type\": \"function\", \"function\": {...}}.",
                                   param=f"tools[{i}]")
        name = function.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidParameter("A function name is 1 to 64 letters, digits, '_' or '-'.",
                                   param=f"tools[{i}].function.name")
        if name in names:
            raise InvalidParameter(f"Two tools are named {name!r}.", param=f"tools[{i}].function.name")
        names.add(name)
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise InvalidParameter("parameters must be a JSON schema object.", param=f"tools[{i}].function.parameters")
        check_json_schema(parameters, param=f"tools[{i}].function.parameters")
        checked.append({"type": "function", "function": {**function, "parameters": parameters}})
    parallel = True if parallel_tool_calls is None else bool(parallel_tool_calls)
    if tool_choice in (None, "auto"):
        return ToolPlan(checked, "auto", parallel)
    if tool_choice == "required":
        return ToolPlan(checked, "required", parallel)
    if isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
        if not isinstance(name, str) or name not in names:
            raise InvalidParameter(f"tool_choice names {name!r}, which is not among the tools.",
                                   param="tool_choice")
        return ToolPlan(checked, "named", False, forced_name=name)
    raise InvalidParameter("tool_choice must be 'none', 'auto', 'required' or {\"type\": \"function\", "
                           "\"function\": {\"name\": ...}}.", param="tool_choice")


def call_grammar(plan: ToolPlan) -> str:
    """GBNF for one call (or, with parallel calls, one or more) of the allowed functions, each
    argument object following its function's schema (slow for big schemas: call it off the
    event loop)."""
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = []
    for function in plan.functions:
        name = function["name"]
        if plan.forced_name and name != plan.forced_name:
            continue
        try:
            # A deep copy: resolve_refs rewrites the schema's $refs in place.
            schema = converter.resolve_refs(json.loads(json.dumps(function["parameters"])), f"tool-{name}")
            arguments = converter.visit(schema, f"{name}-arguments")
        except Exception as exc:  # the converter raises plain exceptions on schemas it cannot express
            raise InvalidParameter(f"The parameters of {name!r} are not supported: {exc}", param="tools") from exc
        head = json.dumps(f'{{"name": "{name}", "arguments": ')
        alternatives.append(f'{head} {arguments} "}}"')
    call = f'"{_gbnf_escape(OPEN)}\\n" ( {" | ".join(alternatives)} ) "\\n{_gbnf_escape(CLOSE)}"'
    root = f"{call} ( \"\\n\" {call} )*" if plan.parallel else call
    gbnf = f"root ::= {root}\n{converter.format_grammar()}"
    if len(gbnf) > DEFAULT_LIMITS.max_grammar_bytes:
        raise SchemaTooLarge(f"the tools' grammar has {len(gbnf)} bytes, above the limit of "
                             f"{DEFAULT_LIMITS.max_grammar_bytes}", param="tools")
    return gbnf


def _gbnf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# ----- the prompt --------------------------------------------------------------------------------

def tool_instructions(plan: ToolPlan) -> str:
    """The system text that describes the tools, for templates that have no place for them."""
    lines = ["You can call these functions. Each is described by a JSON schema of its arguments:"]
    lines += [json.dumps({"name": f["name"], "description": f.get("description", ""), "parameters": f["parameters"]})
              for f in plan.functions]
    lines.append(f'To call one, answer with {OPEN}\\n{{"name": <function name>, "arguments": <arguments object>}}'
                 f"\\n{CLOSE} and nothing else.".replace("\\n", "\n"))
    return "\n".join(lines)


def arguments_object(arguments: Any) -> Any:
    """Templates want a call's arguments as an object; OpenAI sends them as a JSON string."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
            return arguments
    return arguments


def markup(name: str, arguments: Any) -> str:
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments_object(arguments)})}\n{CLOSE}"


def messages_without_tool_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a template without tool support: assistant calls become their markup, tool results
    become user turns (roles such templates may not know)."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if message.get("role") == "assistant" and calls:
            text = "\n".join(markup(c["function"]["name"], c["function"].get("arguments", "{}")) for c in calls)
            prefix = message_text(message.get("content"))
            out.append({"role": "assistant", "content": f"{prefix}\n{text}".strip()})
        elif message.get("role") == "tool":
            out.append({"role": "user",
                        "content": f"<tool_response>\n{message_text(message.get('content'))}\n</tool_response>"})
        else:
            out.append(message)
    return out


def messages_for_tool_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For a template with tool support: arguments as objects, as Hugging Face templates expect."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            calls = [{**c, "function": {**c["function"], "arguments": arguments_object(c["function"].get("arguments"))}}
                     for c in calls]
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


# ----- the answer --------------------------------------------------------------------------------

def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _call_from(obj: Any) -> tuple[str, str] | None:
    """(name, arguments JSON) of a parsed call object, or None if it is not one."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        arguments = arguments_object(arguments)
    return name, json.dumps(arguments, ensure_ascii=False)


def _json_values(text: str) -> list[Any] | None:
    """Every JSON value in `text` (separated by whitespace, commas or call markup), or None if
    anything else is there."""
    decoder = json.JSONDecoder()
    values, i = [], 0
    stripped = text
    for token in (*OPENINGS, CLOSE, "<|/tool_call|>", "</function_call>"):
        stripped = stripped.replace(token, " ")
    while True:
        while i < len(stripped) and stripped[i] in " \t\r\n,":
            i += 1
        if i >= len(stripped):
            return values
        try:
            value, i = decoder.raw_decode(stripped, i)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
            return None
        values.extend(value if isinstance(value, list) else [value])


def parse_calls(text: str) -> list[tuple[str, str]] | None:
    """The calls written in `text`, or None if it is not (only) tool calls."""
    values = _json_values(text)
    if not values:
        return None
    calls = [_call_from(value) for value in values]
    if any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


@dataclass
class ToolCallStream:
    """Turns a choice's text into content and tool-call deltas as it streams.

    Text is content until it starts with (or, after some content, reaches) a tool-call
    opening; from there on it is held as calls. When the text is forced to be calls (a
    grammar), each call's name is sent as soon as it is known and its arguments as they come;
    otherwise each call is sent once it parses, and text that never parses is content.

    Each piece of text is read once, whatever the length of the answer: a forced call's
    arguments are scanned as they arrive (`JsonValueEnd` carries the scan from piece to
    piece) and held calls are joined once, at the end."""

    plan: ToolPlan
    calls: list[dict[str, Any]] = field(default_factory=list)
    _held: str = ""
    _in_calls: bool = False
    _seen_content: bool = False
    _call_text: list[str] = field(default_factory=list)  # "auto": the text from the first opening on
    # A forced call is read in three phases: its head (up to the name), its arguments, its close.
    _phase: Literal["head", "arguments", "close"] = "head"
    _arguments: JsonValueEnd | None = None
    _searched: int = 0  # characters of `_held` already searched for the close

    def push(self, text: str, *, final: bool) -> tuple[str, list[dict[str, Any]]]:
        if self.plan.constrained:
            return "", self._stream_forced(text, final)
        content = ""
        if self._in_calls:
            self._call_text.append(text)
        else:
            self._held += text
            content = self._split_content(final)
            if not self._in_calls:
                return content, []
        if not final:
            return content, []
        held, self._call_text = "".join(self._call_text), []
        calls = parse_calls(held)
        if calls is None:  # not calls after all: the text stays the answer
            return content + held, []
        if not self.plan.parallel:
            calls = calls[:1]
        return content, [delta for name, arguments in calls for delta in self._whole_call(name, arguments)]

    def _split_content(self, final: bool) -> str:
        held = self._held
        starts = [held.find(o) for o in OPENINGS if o in held]
        if not self._seen_content and held.lstrip()[:1] in ("{", "["):
            starts.append(len(held) - len(held.lstrip()))  # a bare JSON call (Llama 3.x style)
        if starts:
            at = min(starts)
            self._in_calls = True
            content, self._held = held[:at], ""
            self._call_text = [held[at:]]
            return content
        if final:
            self._held = ""
            return held
        # Hold back a tail that may be the start of an opening (or, before any content, JSON).
        keep = 0
        for length in range(min(len(held), max(map(len, OPENINGS)) - 1), 0, -1):
            if any(o.startswith(held[-length:]) for o in OPENINGS):
                keep = length
                break
        if not self._seen_content and not held.strip():
            keep = len(held)
        content, self._held = held[: len(held) - keep], held[len(held) - keep:]
        if content.strip():
            self._seen_content = True
        return content

    def _whole_call(self, name: str, arguments: str) -> list[dict[str, Any]]:
        index = len(self.calls)
        call_id = new_call_id()
        self.calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        return [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}},
                {"index": index, "function": {"arguments": arguments}}]

    _HEAD = re.compile(r'<tool_call>\n\{"name": "([A-Za-z0-9_-]+)", "arguments": ')

    def _stream_forced(self, text: str, final: bool) -> list[dict[str, Any]]:
        """The grammar's exact shape: open, name, arguments, close; repeated. `_held` keeps only
        what a phase cannot decide yet (a head, or the close after the arguments), which the
        grammar bounds; the arguments pass straight through."""
        deltas: list[dict[str, Any]] = []
        while True:
            if self._phase == "head":
                self._held = (self._held + text).lstrip()  # the newline between parallel calls
                text = ""
                head = self._HEAD.match(self._held)
                if not head:
                    break
                deltas.extend(self._whole_call(head.group(1), "")[:1])
                text, self._held = self._held[head.end():], ""
                self._phase, self._arguments = "arguments", JsonValueEnd()
            elif self._phase == "arguments":
                end = self._arguments.feed(text)
                fragment = text if end is None else text[:end]
                if fragment:
                    self.calls[-1]["function"]["arguments"] += fragment
                    deltas.append({"index": len(self.calls) - 1, "function": {"arguments": fragment}})
                if end is None:
                    break
                self._held, text = text[end:], ""
                self._phase, self._arguments, self._searched = "close", None, 0
            else:
                self._held += text
                text = ""
                close = self._held.find(CLOSE, max(0, self._searched - len(CLOSE) + 1))
                if close == -1:
                    self._searched = len(self._held)
                    break
                text, self._held = self._held[close + len(CLOSE):], ""
                self._phase = "head"
        if final:
            self._held = ""
        return deltas


class JsonValueEnd:
    """Finds where the JSON object or array at the start of a text ends, the text given in
    pieces: the depth of brackets and whether a string is open carry over from piece to piece,
    so each character is read once (and runs of plain characters are skipped by the regex
    engine, not a Python loop)."""

    _IN_STRING = re.compile(r'["\\]')
    _OUTSIDE = re.compile(r'["{}\[\]]')

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> int | None:
        """Where the value ends in `text` (exclusive), or None if it goes on past it."""
        i = 0
        while i < len(text):
            if self.escaped:
                self.escaped, i = False, i + 1
                continue
            found = (self._IN_STRING if self.in_string else self._OUTSIDE).search(text, i)
            if found is None:
                return None
            i, char = found.end(), found.group()
            if self.in_string:
                if char == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    return i
        return None
