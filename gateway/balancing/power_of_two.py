"""Power of two choices: two ready instances at random, the less loaded one wins.

Nearly as good as scanning all instances, and it keeps several gateways that share a fleet
from all rushing to the same "least busy" instance at once.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from gateway.instances import Instance


class PowerOfTwoBalancer:
    name = "power-of-two"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, candidates: Sequence[Instance], body: Mapping[str, Any] | None = None) -> Instance:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self._rng.sample(list(candidates), 2)
        if first.load() == second.load():
            return first  # already in random order
        return first if first.load() < second.load() else second
