"""OpenAI response shapes: whole responses and streamed chunks, for chat and plain completions."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.sse import DONE, encode as sse
from services.engine import DoneEvent


def usage(done: DoneEvent) -> dict[str, Any]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.cached_tokens},
    }


def perf(done: DoneEvent) -> dict[str, Any]:
    return {**done.timings.report(done.completion_tokens), "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens, "cached_prompt_tokens": done.cached_tokens,
            "active_requests_at_arrival": done.active_at_submit, "queued_requests_at_arrival": done.queued_at_submit}


class ResponseShaper:
    """Builds the responses of one request: same id, created time and model in each piece."""

    def __init__(self, model: str, *, chat: bool) -> None:
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def whole(self, text: str, done: DoneEvent, include_perf: bool) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": done.finish_reason}
            body = self._envelope("chat.completion", [choice])
        else:
            body = self._envelope("text_completion", [{"index": 0, "text": text, "logprobs": None,
                                                       "finish_reason": done.finish_reason}])
        body["usage"] = usage(done)
        if include_perf:
            body["perf"] = perf(done)
        return body

    def _chunk(self, delta: dict[str, Any] | str, finish_reason: str | None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        return self._envelope("text_completion", [{"index": 0, "text": delta, "logprobs": None,
                                                   "finish_reason": finish_reason}])

    def first_chunk(self) -> bytes | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        return sse(self._chunk({"role": "assistant", "content": ""}, None)) if self.chat else None

    def text_chunk(self, text: str) -> bytes:
        return sse(self._chunk({"content": text} if self.chat else text, None))

    def final_chunks(self, done: DoneEvent, *, include_usage: bool, include_perf: bool) -> bytes:
        last = self._chunk({} if self.chat else "", done.finish_reason)
        if include_perf:
            last["perf"] = perf(done)
        out = sse(last)
        if include_usage:
            usage_chunk = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
            usage_chunk["usage"] = usage(done)
            out += sse(usage_chunk)
        return out + DONE
