"""One ASGI middleware that refuses request bodies over a size, while they are read.

A body announced larger than the limit (``Content-Length``) is answered 413 before a byte of
it is read; a body that grows past the limit as it arrives (chunked, or a lying length) stops
the read at the limit: the app's `receive` raises `BodyTooLarge`, which every route answers
413 in OpenAI's error shape. Nothing ever holds more than the limit of a request in memory.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import ApiError

log = logging.getLogger(__name__)


class BodyTooLarge(ApiError, HTTPException):
    """413. An `HTTPException` too, so that FastAPI's body parsing lets it through (it turns
    other exceptions into a 400); the `ApiError` handler answers it."""

    def __init__(self, max_bytes: int) -> None:
        ApiError.__init__(self, 413, f"The request body is larger than {max_bytes} bytes.",
                          code="request_too_large")
        self.status_code = 413
        self.detail = self.message

    def __str__(self) -> str:
        return self.message


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = None
                if announced is None or announced < 0:
                    await ApiError(400, "The Content-Length header is not a number.",
                                   code="invalid_request").response()(scope, receive, send)
                    return
                if announced > limit:
                    await BodyTooLarge(limit).response()(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:  # a route that let it out: answer it here if nothing went out yet
            if started:
                log.info("body over the limit after the response started; connection dropped")
                return
            await exc.response()(scope, receive, send)
