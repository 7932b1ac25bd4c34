"""Keeps live load figures from de-anonymising a battle in progress.

While a battle side streams, its model's instances are busier: a client watching `/api/status`
or `/metrics` next to its battle could see which model is answering side A. The gateway's
cumulative counters already leave battle requests out (`UpstreamProxy.stream_chat(private=True)`
counts them under one "arena-battle" label); the live figures (requests in flight, busy slots,
queue, recent tokens/s, which instances report over their last minute) cannot be split, so the
public views withhold them, for every model alike, while any battle side streams and for
`grace` seconds after the last one ended.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

# The instances report tokens/s over their last 60 s; a probe may be up to a few seconds late.
DEFAULT_GRACE = 70.0


class BattleActivity:
    def __init__(self, grace: float = DEFAULT_GRACE, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self.streaming = 0
        self._last_end = float("-inf")

    @contextmanager
    def side_streaming(self) -> Iterator[None]:
        self.streaming += 1
        try:
            yield
        finally:
            self.streaming -= 1
            self._last_end = self.clock()

    def hides_live_load(self) -> bool:
        return self.streaming > 0 or self.clock() - self._last_end < self.grace
