"""`Periodic`: a coroutine run every few seconds in the background, surviving a lost database."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from gateway.store.database import DatabaseUnavailable

log = logging.getLogger("gateway.store")


class Periodic:
    def __init__(self, name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self.interval = interval
        self.job = job
        self._task: asyncio.Task | None = None
        self._failing = False

    async def run_once(self) -> None:
        try:
            await self.job()
        except DatabaseUnavailable as exc:
            if not self._failing:
                log.warning("%s: %s (retrying every %.1fs)", self.name, exc, self.interval)
            self._failing = True
            return
        except Exception:
            log.exception("%s failed", self.name)
            return
        if self._failing:
            log.info("%s: the database is back", self.name)
        self._failing = False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.run_once()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
