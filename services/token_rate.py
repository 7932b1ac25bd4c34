"""Tokens generated over a sliding window: `/health/details`' `tokens_per_second`, counted the
same way by both engines (the in-process scheduler at each decode step, the llama-server engine
as each choice ends)."""

from __future__ import annotations

import collections
import time


class TokenRate:
    """Written by one thread (the scheduler's, or the event loop), read by another: the window
    is copied whole before it is read."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._recent: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, tokens: int, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        self._recent.append((now, tokens))
        while now - self._recent[0][0] > self.window:  # the window bounds what is kept
            self._recent.popleft()

    def per_second(self) -> float:
        now = time.perf_counter()
        recent = [(t, n) for t, n in list(self._recent) if now - t <= self.window]
        if not recent:
            return 0.0
        return round(sum(n for _, n in recent) / max(now - recent[0][0], 1.0), 2)
