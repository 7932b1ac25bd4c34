"""The model service's uvicorn server, draining on SIGTERM (imported by `arena serve` once the
model's load has started: uvicorn is not on the way to the load)."""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn

from services.generation import GenerationService

log = logging.getLogger("services")


class DrainingServer(uvicorn.Server):
    """On SIGTERM (or the first Ctrl-C): report `draining`, refuse new work, finish what is in
    flight, then exit. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, service: GenerationService, drain_timeout: float) -> None:
        super().__init__(config)
        self.service = service
        self.drain_timeout = drain_timeout
        self._draining = False

    def handle_exit(self, sig: int, frame) -> None:
        if self._draining:
            log.warning("second signal: exiting without waiting")
            self.force_exit = True
            self.should_exit = True
            return
        self._draining = True
        log.info("signal %s: draining (in flight: %s)", sig, self.service.health_details().slots.active)
        self.service.start_draining()
        asyncio.get_event_loop().create_task(self._exit_when_idle())

    async def _exit_when_idle(self) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while not self.service.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not self.service.idle:
            log.warning("drain timeout after %.0fs: exiting with work in flight", self.drain_timeout)
        # Give the last responses a moment to be written out before the sockets close.
        await asyncio.sleep(0.2)
        self.should_exit = True
