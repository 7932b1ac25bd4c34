"""The model calls of the modes, behind one small interface.

`ChatClient.stream(request)` yields the text of a streamed chat completion and raises
`ChatFailed` when the model cannot answer. Two implementations:

- `FleetChat`: a model of our own fleet, in-process through the gateway's `UpstreamProxy`
  (instance choice, retries before the first byte, slot freed when the stream is closed);
- `ExternalChat`: any OpenAI-compatible endpoint (GitHub Models by default) over httpx, with a
  bearer token that goes to that endpoint and nowhere else.

Closing the iterator closes the request, which frees the model's slot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

import httpx

from shared.errors import ApiError
from shared.sse import SseReader


class ChatFailed(Exception):
    """The model could not answer (unreachable, error answer, broken or empty stream)."""


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.7
    response_format: dict[str, Any] | None = None
    seed: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages, "max_tokens": self.max_tokens,
                                "temperature": self.temperature, "stream": True}
        if self.response_format is not None:
            body["response_format"] = self.response_format
        if self.seed is not None:
            body["seed"] = self.seed
        return body


class ChatClient(Protocol):
    async def stream(self, request: ChatRequest) -> AsyncIterator[str]: ...


@dataclass
class _StreamState:
    finished: bool = False
    text: list[str] = field(default_factory=list)


def _deltas(payload: str, state: _StreamState) -> list[str]:
    """The content pieces of one SSE data payload of a chat-completion stream."""
    if payload.strip() == "[DONE]":
        state.finished = True
        return []
    try:
        event = json.loads(payload)
    except ValueError:
        return []
    if not isinstance(event, dict):
        return []
    if "error" in event:
        error = event["error"]
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise ChatFailed(str(message or "the model failed"))
    pieces = []
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            pieces.append(content)
        if isinstance(choice.get("finish_reason"), str):
            state.finished = True
    return pieces


async def _read(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    reader, state = SseReader(), _StreamState()
    async for chunk in chunks:
        for payload in reader.feed(chunk):
            for piece in _deltas(payload, state):
                yield piece
    if not state.finished:
        raise ChatFailed("the stream ended before the answer was complete")


class FleetChat:
    """A model of our own fleet, through the gateway's upstream proxy, in-process."""

    def __init__(self, stream_chat: Callable[[dict[str, Any]], AsyncIterator[bytes]]) -> None:
        self._stream_chat = stream_chat

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        upstream = self._stream_chat(request.body())
        try:
            async for piece in _read(upstream):
                yield piece
        except ApiError as exc:
            raise ChatFailed(exc.message) from None
        finally:
            await upstream.aclose()


class ExternalChat:
    """An OpenAI-compatible endpoint outside the fleet, e.g. GitHub Models.

    The model named in a request is replaced by the configured one. The token only ever goes
    into this client's Authorization header; error messages carry the status, never headers.
    """

    def __init__(self, base_url: str, model: str, token: str | None, *, timeout: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.model = model
        headers = {"accept": "text/event-stream"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", headers=headers, transport=transport,
                                         timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=False)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str]:
        body = {**request.body(), "model": self.model}
        try:
            async with self._client.stream("POST", "chat/completions", json=body) as response:
                if response.status_code >= 400:
                    content = (await response.aread())[:2000]
                    raise ChatFailed(f"the external model answered {response.status_code}: {_message(content)}")
                async for piece in _read(response.aiter_bytes()):
                    yield piece
        except httpx.HTTPError as exc:
            raise ChatFailed(f"the external model could not be reached ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _message(content: bytes) -> str:
    try:
        data = json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")[:200]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or "")[:200]
    return str(data)[:200]


async def collect(client: ChatClient, request: ChatRequest,
                  on_piece: Callable[[str], Awaitable[None]] | None = None) -> str:
    """The whole text of one answer, calling `on_piece` with each piece as it arrives."""
    parts = []
    stream = client.stream(request)
    try:
        async for piece in stream:
            parts.append(piece)
            if on_piece is not None:
                await on_piece(piece)
    finally:
        await stream.aclose()
    return "".join(parts)
