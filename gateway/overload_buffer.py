"""Requests held at the gateway while every instance of their model is full.

When no ready instance of a model has a free slot, a request waits here (first come, first
served, at most `overload_buffer` of them per model, each at most `overload_wait` seconds, both
from the catalogue) instead of being sent to an instance whose own queue may be full. It is
released when an instance reports a free slot: one of the gateway's own requests ended there
(`Instance.lease`), or a health probe found the instance with room. A full buffer, or a wait
that runs out, is a 503 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from shared.errors import ApiError


class OverloadBuffer:
    def __init__(self, limits: Callable[[str], tuple[int, float]]) -> None:
        self._limits = limits          # model -> (size, max wait in seconds)
        self._waiting: dict[str, deque[asyncio.Future]] = {}

    def waiting(self, model: str) -> int:
        return len(self._waiting.get(model, ()))

    async def wait_for_slot(self, model: str, has_free_slot: Callable[[], bool]) -> None:
        """Return once `has_free_slot()` is true for this request's turn; 503 if it can't be."""
        queue = self._waiting.setdefault(model, deque())
        if not queue and has_free_slot():
            return
        size, max_wait = self._limits(model)
        if size <= 0:
            return  # no buffer for this model: the instance's own queue decides
        if len(queue) >= size:
            raise ApiError(503, f"Every instance of '{model}' is busy and {size} requests are already waiting; "
                                "try again shortly.", code="overloaded", headers={"Retry-After": "2"})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        waiter = loop.create_future()
        queue.append(waiter)
        try:
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), deadline - loop.time())
                except asyncio.TimeoutError:
                    raise ApiError(503, f"Every instance of '{model}' stayed busy for {max_wait:g} s; "
                                        "try again shortly.", code="overloaded",
                                   headers={"Retry-After": str(max(1, round(max_wait / 4)))}) from None
                if has_free_slot():
                    return
                # Woken, but the slot went to someone else: wait again, first in line.
                waiter = loop.create_future()
                queue.appendleft(waiter)
        finally:
            if waiter in queue:
                queue.remove(waiter)
            if queue and has_free_slot():
                self.slot_freed(model)  # more room than this request took: the next one goes too

    def slot_freed(self, model: str) -> None:
        """An instance of `model` has a free slot: wake the first request waiting for one."""
        queue = self._waiting.get(model)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
