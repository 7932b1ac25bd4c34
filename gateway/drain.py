"""The gateway's own drain: on SIGTERM it finishes what is in flight, refuses what is new with a
retryable 503, then exits.

`DrainGuard` wraps the ASGI app: it counts requests in flight (a stream counts until its last
byte) and, once draining, answers every new request 503 with ``Retry-After`` in OpenAI's error
shape, so a client (or the tunnel's other connector) retries on the successor. `DrainingServer`
is uvicorn's server with the first SIGTERM or SIGINT starting a drain instead of a shutdown: it
exits when nothing is in flight (after at least `linger` seconds, so new requests learn to go
elsewhere) or when `timeout` runs out; a second signal exits at once.
"""

from __future__ import annotations

import json
import logging
import signal
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_body

log = logging.getLogger("gateway.drain")


class DrainGuard:
    def __init__(self, app: ASGIApp, *, retry_after: int = 1) -> None:
        self.app = app
        self.retry_after = retry_after
        self.in_flight = 0
        self.draining_since: float | None = None

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def start_drain(self) -> None:
        if self.draining_since is None:
            self.draining_since = time.monotonic()
            log.info("draining: %d requests in flight; new requests get 503", self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.draining_since is not None:
            await self._refuse(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body("This gateway is shutting down; retry (its successor takes over).",
                                     type="service_unavailable", code="gateway_draining")).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, guard: DrainGuard, *, timeout: float, linger: float) -> None:
        super().__init__(config)
        self.guard = guard
        self.drain_timeout = timeout
        self.linger = linger

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.guard.draining or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)  # a second signal: stop now
            self.force_exit = True
            return
        self.guard.start_drain()

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        since = self.guard.draining_since
        if since is None:
            return False
        waited = time.monotonic() - since
        if self.guard.in_flight == 0 and waited >= self.linger:
            log.info("drained after %.1fs; exiting", waited)
            return True
        if waited >= self.drain_timeout:
            log.warning("drain timeout (%.0fs) with %d requests in flight; exiting", waited, self.guard.in_flight)
            return True
        return False
