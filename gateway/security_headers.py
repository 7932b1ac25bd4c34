"""Headers every gateway answer carries: `X-Content-Type-Options: nosniff` on all of them, and
the arena's Content-Security-Policy on any HTML answer that does not set its own (the static
files under /static/ included), so no page of the gateway's origin runs script it did not ship."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class SecurityHeaders:
    def __init__(self, app: ASGIApp, content_security_policy: str) -> None:
        self.app = app
        self.csp = content_security_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("content-security-policy", self.csp)
            await send(message)

        await self.app(scope, receive, send_with_headers)
