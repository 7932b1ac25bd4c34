"""The completion endpoints as a plain ASGI layer in front of FastAPI.

`POST /v1/chat/completions` and `POST /v1/completions` are the gateway's hot path; served
here they skip FastAPI's middleware stack, routing and dependency injection, which on a small
machine cost more than the whole rest of the relay. The work is the same as any route's:
check the API key (`ApiKeyGuard`), then `UpstreamProxy.handle`. Everything else goes to
FastAPI. `GatewayApp` is FastAPI with this layer in front (behind CORS when it is on).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GATEWAY_ERRORS
from shared.errors import ApiError

log = logging.getLogger("gateway")

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class CompletionFastPath:
    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in COMPLETION_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise ApiError(405, f"Use POST for {scope['path']}.", code="method_not_allowed",
                               headers={"Allow": "POST"})
            request = Request(scope, receive)
            key = await self.state.key_guard.check(request)
            response = await self.state.upstream.handle(request, scope["path"], key.key_id if key else None)
        except Exception as exc:  # answered by the gateway's one error table; never a bare 500 page
            if GATEWAY_ERRORS.spec_for(exc) is None and not isinstance(exc, ApiError):
                log.exception("unexpected error on %s", scope["path"])
            response = GATEWAY_ERRORS.api_error(exc).response()
        await response(scope, receive, send)


class GatewayApp(FastAPI):
    """FastAPI, with the completion endpoints answered by `front` before its middleware stack."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and scope["type"] == "http" and scope["path"] in COMPLETION_PATHS:
            scope["app"] = self
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
