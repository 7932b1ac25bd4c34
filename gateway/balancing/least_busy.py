"""Least busy: the ready instance with the lowest load; ties broken at random."""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from gateway.instances import Instance


class LeastBusyBalancer:
    name = "least-busy"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[Instance], body: Mapping[str, Any] | None = None) -> Instance:
        if len(candidates) == 1:
            return candidates[0]
        lowest = min(inst.load() for inst in candidates)
        best = [inst for inst in candidates if inst.load() == lowest]
        return best[0] if len(best) == 1 else self._rng.choice(best)
