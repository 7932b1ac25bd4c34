"""OpenAI response shapes: whole responses and streamed chunks, for chat and plain completions."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.sse import encode as sse
from services.choice_output import ChoiceDelta, ChoiceOutput
from services.engine import DoneEvent, first_choice
from services.sampling import TokenLogprob


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    def one(token: bytes, logprob: float) -> dict[str, Any]:
        return {"token": token.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(token)}

    return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                        for e in entries], "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy completions shape; `offset` is where the first token's text starts."""
    tokens, offsets = [], []
    for entry in entries:
        text = entry.token.decode("utf-8", "replace")
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.decode("utf-8", "replace"): lp for t, lp in e.top} for e in entries],
            "text_offset": offsets}


def merged_usage(dones: list[DoneEvent]) -> dict[str, Any]:
    """One request's usage: the prompt counted once, however many choices shared it."""
    first = first_choice(dones)
    completion = sum(done.completion_tokens for done in dones)
    return {"prompt_tokens": first.prompt_tokens, "completion_tokens": completion,
            "total_tokens": first.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": first.cached_tokens}}


def perf(dones: list[DoneEvent]) -> dict[str, Any]:
    last = max(dones, key=lambda done: done.timings.finished or 0)
    usage = merged_usage(dones)
    return {**last.timings.report(usage["completion_tokens"]), "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"], "cached_prompt_tokens": usage["prompt_tokens_details"]["cached_tokens"],
            "active_requests_at_arrival": last.active_at_submit, "queued_requests_at_arrival": last.queued_at_submit}


class ResponseShaper:
    """Builds the responses of one request: same id, created time and model in each piece."""

    def __init__(self, model: str, *, chat: bool, want_logprobs: bool = False) -> None:
        self.chat = chat
        self.model = model
        self.want_logprobs = want_logprobs
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._text_offsets: dict[int, int] = {}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def _logprobs(self, index: int, entries: list[TokenLogprob]) -> dict[str, Any] | None:
        if not self.want_logprobs:
            return None
        if self.chat:
            return chat_logprobs(entries)
        offset = self._text_offsets.get(index, 0)
        shaped = completion_logprobs(entries, offset)
        self._text_offsets[index] = offset + sum(len(t) for t in shaped["tokens"])
        return shaped

    def whole(self, outputs: list[ChoiceOutput], dones: list[DoneEvent], include_perf: bool) -> dict[str, Any]:
        choices = []
        for output in outputs:
            logprobs = self._logprobs(output.index, output.logprobs)
            if self.chat:
                message: dict[str, Any] = {"role": "assistant", "content": "".join(output.content)}
                if output.reasoning_text:
                    message["reasoning_content"] = "".join(output.reasoning_text)
                if output.tool_calls:
                    message["tool_calls"] = output.tool_calls
                    message["content"] = message["content"] or None
                choices.append({"index": output.index, "message": message, "logprobs": logprobs,
                                "finish_reason": output.finish_reason})
            else:
                choices.append({"index": output.index, "text": "".join(output.content), "logprobs": logprobs,
                                "finish_reason": output.finish_reason})
        body = self._envelope("chat.completion" if self.chat else "text_completion", choices)
        body["usage"] = merged_usage(dones)
        if include_perf:
            body["perf"] = perf(dones)
        return body

    def _chunk(self, index: int, delta: dict[str, Any] | str, finish_reason: str | None,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.chat:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        return self._envelope("text_completion", [{"index": index, "text": delta, "logprobs": logprobs,
                                                   "finish_reason": finish_reason}])

    def first_chunks(self, n: int) -> bytes:
        """Chat streams open with the assistant role of each choice, as OpenAI's do."""
        if not self.chat:
            return b""
        return b"".join(sse(self._chunk(i, {"role": "assistant", "content": ""}, None)) for i in range(n))

    def delta_chunk(self, index: int, delta: ChoiceDelta) -> bytes:
        logprobs = self._logprobs(index, delta.logprobs) if delta.logprobs else None
        if not self.chat:
            return sse(self._chunk(index, delta.content, None, logprobs))
        body: dict[str, Any] = {}
        if delta.reasoning:
            body["reasoning_content"] = delta.reasoning
        if delta.content:
            body["content"] = delta.content
        if delta.tool_call is not None:
            body["tool_calls"] = [delta.tool_call]
        if not body:
            body["content"] = ""
        return sse(self._chunk(index, body, None, logprobs))

    def finish_chunk(self, output: ChoiceOutput, dones: list[DoneEvent] | None, include_perf: bool) -> bytes:
        """The choice's last chunk; `dones` (all of them) when it is the request's last choice."""
        last = self._chunk(output.index, {} if self.chat else "", output.finish_reason)
        if include_perf and dones:
            last["perf"] = perf(dones)
        return sse(last)

    def usage_chunk(self, dones: list[DoneEvent]) -> bytes:
        chunk = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        chunk["usage"] = merged_usage(dones)
        return sse(chunk)
