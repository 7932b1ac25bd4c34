"""OpenAI wire types of the model service's requests (responses are built in openai_format)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_TOP_LOGPROBS = 20


class StreamOptions(BaseModel):
    include_usage: bool = False


def _gil_checkpoint(value: Any) -> Any:
    """A line of Python run per item of a request's long lists: pydantic-core validates a list
    without letting the GIL go, so a 4 MB body's messages would hold it for a whole validation
    (about 0.3 s) even in a worker thread (`shared.body_parsing`); at each Python call the
    interpreter may hand it to the event loop's thread."""
    return value


class GilCheckpoint(BaseModel):
    """A model a request may hold many thousands of (see `_gil_checkpoint`)."""

    _checkpoint = model_validator(mode="before")(_gil_checkpoint)


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: str | dict[str, Any] | None = None


class MessageToolCall(GilCheckpoint):
    """A call in an assistant message of the history (typed: the prompt is rendered from it)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: Literal["function"] | None = None
    function: CalledFunction


class ContentPart(GilCheckpoint):
    """One part of a message's content; only text parts are read (others are refused, by type,
    when the prompt is made)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(GilCheckpoint):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable_text(value: Any) -> Any:
    """Refuse text UTF-8 cannot encode: JSON may escape a lone UTF-16 surrogate (`"\\ud800"`),
    which neither the tokenizer nor the llama-server child can take. Walks nested values
    without recursion (a body may nest as deep as the JSON parser allows)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                raise ValueError("the text holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


class GenerationParams(BaseModel):
    """Parameters both endpoints share. Unknown fields are accepted and ignored, as OpenAI's
    SDKs send fields a small server may not know."""

    model_config = ConfigDict(extra="allow")

    _encodable = field_validator("*", mode="before")(encodable_text)

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0, le=5)
    n: int | None = Field(None, ge=1, le=16, description="choices to generate; the prompt is prefilled once")
    stream: bool = False
    stream_options: StreamOptions | None = None
    include_perf: bool = False
    response_format: dict[str, Any] | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


    @property
    def choices(self) -> int:
        return self.n or 1


class ChatCompletionRequest(GenerationParams):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Annotated[dict[str, Any], BeforeValidator(_gil_checkpoint)]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # "none" keeps a reasoning model's thinking inline in `content` (llama.cpp's name for it);
    # otherwise it goes to `reasoning_content`.
    reasoning_format: Literal["auto", "deepseek", "none"] = "auto"
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=16)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @property
    def wanted_top_logprobs(self) -> int | None:
        """None: no log-probabilities; else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(GenerationParams):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @property
    def wanted_top_logprobs(self) -> int | None:
        return self.logprobs
