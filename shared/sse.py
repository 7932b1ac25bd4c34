"""Server-sent events as OpenAI streams them: the one place that frames and reads them.

Framing: each event is one ``data: <json>`` line and a blank line; a stream ends with
``data: [DONE]``; an error that happens after the first byte is an event whose payload is an
OpenAI error body. Reading: `SseReader` splits a byte stream, however it is chunked, into the
events' data payloads.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterable, AsyncIterator

DONE_PAYLOAD = "[DONE]"
DONE = b"data: [DONE]\n\n"


def encode(payload: dict[str, Any]) -> bytes:
    """One event carrying `payload` as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def error_event(body: dict[str, Any]) -> bytes:
    """An OpenAI error body as the event that ends a stream, followed by ``[DONE]``."""
    return encode(body) + DONE


class SseReader:
    """Splits a byte stream into its events' data payloads (multi-line data joined by
    newlines), whatever the chunking; CRLF line ends are accepted."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        payloads = []
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                payloads.append(b"\n".join(data).decode("utf-8", errors="replace"))
        return payloads


async def read_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The data payloads of a byte stream, in order (``[DONE]`` included)."""
    reader = SseReader()
    async for chunk in chunks:
        for payload in reader.feed(chunk):
            yield payload
