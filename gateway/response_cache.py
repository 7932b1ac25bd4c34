"""The gateway's cache of answers to repeated deterministic requests.

A request with `temperature: 0` or a `seed` gets the same answer each time it is asked with the
same parameters, so the gateway keeps such answers (bounded in entries and in age, both from
the catalogue) and answers a repeat without touching an instance, as JSON or as an SSE stream,
marked `X-Arena-Cache: hit`. The key is the endpoint, the model and every field of the body
except the ones that only change the framing (`stream`, `stream_options`): the messages or
prompt and all sampling parameters, including ones the gateway does not know. A request with
`Cache-Control: no-store` is neither answered from nor stored in the cache. Only complete
single-choice answers (finish reason `stop` or `length`) are kept; streams are recorded as they
pass through.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping

from starlette.responses import JSONResponse, Response, StreamingResponse

CACHE_HEADER = "x-arena-cache"
_FRAMING_FIELDS = frozenset({"stream", "stream_options"})
_MAX_ANSWER_CHARS = 256 * 1024


@dataclass(frozen=True)
class CachedAnswer:
    chat: bool
    model: str
    content: str
    finish_reason: str
    usage: dict[str, Any] | None


def deterministic(body: Mapping[str, Any]) -> bool:
    n = body.get("n")
    if n not in (None, 1):
        return False
    return body.get("temperature") == 0 or isinstance(body.get("seed"), int)


class ResponseCache:
    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
        """Whether a request may be cached at all (before its key is worth making)."""
        return self.max_entries > 0 and "no-store" not in headers.get("cache-control", "").lower() and \
            deterministic(body)

    def key_for(self, endpoint: str, model: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        """The cache key of a request, or None when it must not be cached."""
        if not self.wants(body, headers):
            return None
        material = {k: v for k, v in body.items() if k not in _FRAMING_FIELDS}
        material.update(model=model, _endpoint=endpoint)
        try:
            text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str | None) -> CachedAnswer | None:
        if key is None:
            return None
        found = self._entries.get(key)
        if found is None or self._clock() - found[0] > self.ttl:
            if found is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found[1]

    def put(self, key: str | None, answer: CachedAnswer | None) -> None:
        if key is None or answer is None or len(answer.content) > _MAX_ANSWER_CHARS:
            return
        self._entries[key] = (self._clock(), answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    # -- answering a hit -------------------------------------------------------------------

    def response(self, answer: CachedAnswer, body: Mapping[str, Any], headers: dict[str, str]) -> Response:
        headers = {**headers, CACHE_HEADER: "hit"}
        if body.get("stream") is True:
            options = body.get("stream_options")
            usage = isinstance(options, dict) and options.get("include_usage") is True
            return StreamingResponse(_sse(answer, usage), media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        return JSONResponse(_whole(answer), headers=headers)

    # -- recording a miss ------------------------------------------------------------------

    def remember_whole(self, key: str | None, status: int, content: bytes) -> None:
        if key is None or status != 200:
            return
        try:
            payload = json.loads(content)
            choices = payload["choices"]
            if len(choices) != 1 or choices[0].get("finish_reason") not in ("stop", "length"):
                return
            choice = choices[0]
            chat = "message" in choice
            text = choice["message"].get("content") if chat else choice.get("text")
            if not isinstance(text, str):
                return
            self.put(key, CachedAnswer(chat, str(payload.get("model", "")), text, choice["finish_reason"],
                                       payload.get("usage")))
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            return

    def recording(self, key: str | None, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream, passed through unchanged and stored once it ended complete with `[DONE]`."""
        return chunks if key is None else self._record(key, chunks)

    async def _record(self, key: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        recorder = _StreamRecorder()
        try:
            async for chunk in chunks:
                recorder.feed(chunk)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        self.put(key, recorder.answer())


class _StreamRecorder:
    def __init__(self) -> None:
        self._buffer = b""
        self._parts: list[str] = []
        self._chat: bool | None = None
        self._model = ""
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._done = False
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        self._buffer += chunk
        if len(self._buffer) > 4 * _MAX_ANSWER_CHARS:
            self._broken = True
            return
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            self._event(event.strip())

    def _event(self, event: bytes) -> None:
        if not event.startswith(b"data: "):
            return
        data = event[6:]
        if data == b"[DONE]":
            self._done = True
            return
        try:
            payload = json.loads(data)
            if "error" in payload:
                self._broken = True
                return
            self._model = payload.get("model", self._model)
            if payload.get("usage"):
                self._usage = payload["usage"]
            choices = payload.get("choices") or []
            if len(choices) > 1 or (choices and choices[0].get("index", 0) != 0):
                self._broken = True
                return
            for choice in choices:
                delta = choice.get("delta")
                self._chat = delta is not None
                text = delta.get("content") if delta is not None else choice.get("text")
                if isinstance(text, str):
                    self._parts.append(text)
                self._finish = choice.get("finish_reason") or self._finish
        except (ValueError, TypeError, AttributeError):
            self._broken = True

    def answer(self) -> CachedAnswer | None:
        if self._broken or not self._done or self._chat is None or self._finish not in ("stop", "length"):
            return None
        return CachedAnswer(self._chat, self._model, "".join(self._parts), self._finish, self._usage)


def _whole(answer: CachedAnswer) -> dict[str, Any]:
    if answer.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": answer.content},
                  "finish_reason": answer.finish_reason}
    else:
        choice = {"index": 0, "text": answer.content, "finish_reason": answer.finish_reason}
    return {"id": f"{'chatcmpl' if answer.chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if answer.chat else "text_completion", "created": int(time.time()),
            "model": answer.model, "choices": [choice], **({"usage": answer.usage} if answer.usage else {})}


async def _sse(answer: CachedAnswer, include_usage: bool) -> AsyncIterator[bytes]:
    ident = f"{'chatcmpl' if answer.chat else 'cmpl'}-{uuid.uuid4().hex}"
    base = {"id": ident, "object": "chat.completion.chunk" if answer.chat else "text_completion",
            "created": int(time.time()), "model": answer.model}

    def event(choices: list[dict], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

    if answer.chat:
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {"content": answer.content}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": answer.finish_reason}])
    else:
        yield event([{"index": 0, "text": answer.content, "finish_reason": None}])
        yield event([{"index": 0, "text": "", "finish_reason": answer.finish_reason}])
    if include_usage and answer.usage:
        yield event([], usage=answer.usage)
    yield b"data: [DONE]\n\n"
