"""The completion endpoints as a pure ASGI router in front of FastAPI's routing.

`POST /v1/chat/completions` and `POST /v1/completions` are the gateway's hot path; served
here they skip FastAPI's routing and dependency injection, which on a small machine cost more
than the whole rest of the relay. The work is the same as any route's: check the API key
(`ApiKeyGuard`), then `UpstreamProxy.handle`. Every other request goes on to FastAPI.

`create_app` installs it as the innermost of the app's middleware (`add_middleware`), so that
CORS, the body limit and the 500 handler configured once on the app wrap it like any route.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GATEWAY_ERRORS
from shared.errors import ApiError

log = logging.getLogger("gateway")

COMPLETION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class CompletionRouter:
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
