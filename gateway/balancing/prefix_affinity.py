"""Prefix affinity: send a request to the instance that most likely still holds its prompt's
prefix in its KV cache (slots or RAM prompt cache), so that a conversation's next turn, or a
request sharing a long system prompt, skips recomputing it; unless that instance is much busier
than the least busy one.

The prompt (the messages, or the completion prompt) is read as text and cut into blocks of
`block_chars` characters; each full block gets a hash chained with the one before, so a block's
hash names the whole prefix up to its end. The balancer remembers, in a bounded LRU map, which
instance was last sent each prefix. A request goes to the instance remembered for its longest
known prefix, if that instance is ready and its load (busy requests per slot) exceeds the least
busy candidate's by at most `max_load_gap`; otherwise (new conversation, or affinity too
costly) the least busy wins. Either way the chosen instance is remembered for every block.

`max_load_gap` defaults to 0.5: an instance half its slots busier than the least busy one is
"much busier". On CPU, recomputing a conversation's history costs about as much as the
generation that waits behind a few more requests, so small imbalances are worth the cache hit,
large ones are not.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, OrderedDict
from typing import Any, Mapping, Sequence

from gateway.instances import Instance

BLOCK_CHARS = 256
MAX_BLOCKS = 65536          # remembered prefixes (each ~100 bytes): a few MB at most
MAX_LOAD_GAP = 0.5


def prompt_text(body: Mapping[str, Any] | None) -> str:
    """The request's prompt as one string whose prefixes grow with the conversation."""
    if not body:
        return ""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                if not isinstance(content, str):
                    content = json.dumps(content, sort_keys=True)
                parts.append(f"{message.get('role')}\x00{content}\x01")
        return "".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def block_hashes(text: str, block_chars: int = BLOCK_CHARS) -> list[bytes]:
    hashes, previous = [], b""
    for end in range(block_chars, len(text) + 1, block_chars):
        previous = hashlib.blake2b(previous + text[end - block_chars:end].encode(), digest_size=16).digest()
        hashes.append(previous)
    return hashes


class PrefixAffinityBalancer:
    name = "prefix-affinity"

    def __init__(self, *, block_chars: int = BLOCK_CHARS, max_blocks: int = MAX_BLOCKS,
                 max_load_gap: float = MAX_LOAD_GAP, rng: random.Random | None = None) -> None:
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self.max_load_gap = max_load_gap
        self._rng = rng or random.Random()
        self._owner: OrderedDict[tuple[str, bytes], str] = OrderedDict()  # (model, prefix hash) -> instance id
        # (model, outcome) -> count; outcome: "hit" (sent where its prefix is), "overridden" (that
        # instance was much busier), "new" (no known prefix)
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def choose(self, candidates: Sequence[Instance], body: Mapping[str, Any] | None = None) -> Instance:
        model = candidates[0].model
        hashes = block_hashes(prompt_text(body), self.block_chars)
        least = self._least_busy(candidates)
        owner = self._owner_of(model, hashes, candidates)
        if owner is None:
            chosen, outcome = least, "new"
        elif owner.load() - least.load() <= self.max_load_gap:
            chosen, outcome = owner, "hit"
        else:
            chosen, outcome = least, "overridden"
        if hashes:
            self.outcomes[(model, outcome)] += 1
            self._remember(model, hashes, chosen)
        return chosen

    def _least_busy(self, candidates: Sequence[Instance]) -> Instance:
        lowest = min(inst.load() for inst in candidates)
        best = [inst for inst in candidates if inst.load() == lowest]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _owner_of(self, model: str, hashes: list[bytes], candidates: Sequence[Instance]) -> Instance | None:
        by_id = {inst.instance_id: inst for inst in candidates}
        for digest in reversed(hashes):  # the longest known prefix first
            owner = by_id.get(self._owner.get((model, digest), ""))
            if owner is not None:
                return owner
        return None

    def _remember(self, model: str, hashes: list[bytes], chosen: Instance) -> None:
        for digest in hashes:
            key = (model, digest)
            self._owner[key] = chosen.instance_id
            self._owner.move_to_end(key)
        while len(self._owner) > self.max_blocks:
            self._owner.popitem(last=False)
