"""What one choice's generated text becomes in the answer: content, reasoning, tool calls, and
the log-probabilities of its tokens.

The engine gives plain text deltas; a `ChoiceOutput` turns them into the pieces OpenAI's API
names (`content`, `reasoning_content`, `tool_calls`) as they stream, and keeps the whole of
each for a non-streamed answer. It knows nothing of HTTP or of the wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.sampling import TokenLogprob


@dataclass
class ChoiceDelta:
    """One piece of a choice: text of one kind, or a fragment of a tool call."""

    content: str = ""
    reasoning: str = ""
    tool_call: dict[str, Any] | None = None  # {"index", "id"?, "type"?, "function": {"name"?, "arguments"}}
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.content or self.reasoning or self.tool_call or self.logprobs)


class ChoiceOutput:
    """The running state of one choice. `reasoning` splits thinking text off the content;
    `tools` turns tool-call markup into tool calls. Either may be None (plain text)."""

    def __init__(self, index: int, *, reasoning=None, tools=None) -> None:
        self.index = index
        self._reasoning = reasoning
        self._tools = tools
        self.content: list[str] = []
        self.reasoning_text: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason: str | None = None

    def feed(self, text: str, logprobs: list[TokenLogprob] | None = None) -> list[ChoiceDelta]:
        return self._route(text, logprobs or [], final=False)

    def finish(self, finish_reason: str) -> list[ChoiceDelta]:
        deltas = self._route("", [], final=True)
        self.finish_reason = finish_reason
        if self._tools is not None and self._tools.calls and finish_reason == "stop":
            self.finish_reason = "tool_calls"
        return deltas

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return self._tools.calls if self._tools is not None else []

    def _route(self, text: str, logprobs: list[TokenLogprob], *, final: bool) -> list[ChoiceDelta]:
        self.logprobs.extend(logprobs)
        deltas: list[ChoiceDelta] = []
        if self._reasoning is not None:
            thinking, answer = self._reasoning.push(text, final=final)
        else:
            thinking, answer = "", text
        if thinking:
            self.reasoning_text.append(thinking)
            deltas.append(ChoiceDelta(reasoning=thinking))
        if self._tools is not None:
            content, call_deltas = self._tools.push(answer, final=final)
        else:
            content, call_deltas = answer, []
        if content:
            self.content.append(content)
            deltas.append(ChoiceDelta(content=content))
        deltas.extend(ChoiceDelta(tool_call=call) for call in call_deltas)
        if logprobs:
            if deltas:
                deltas[0].logprobs = logprobs
            else:
                deltas.append(ChoiceDelta(logprobs=logprobs))
        return deltas
