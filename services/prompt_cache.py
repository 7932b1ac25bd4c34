"""A prompt cache in RAM, beyond the slots.

A slot keeps the KV of the last sequence it held, but with more live conversations than slots a
conversation's KV is overwritten before its next turn, which then recomputes its whole history
(prompt processing is the slow part on CPU). So when a slot is about to be reused, the
scheduler saves the KV state of the sequence it held here, indexed by its tokens; a request
whose prompt shares a long prefix with a saved sequence gets it restored into its slot instead
(as llama.cpp's server does with `--cache-ram`). Bounded in bytes, least recently used out.

Only the scheduler thread changes it; `report()` may be read from any thread.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

# Sequences shorter than this are cheaper to recompute than to copy around.
MIN_TOKENS = 32


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class CachedSequence:
    tokens: tuple[int, ...]
    state: bytes


@dataclass(frozen=True)
class CacheReport:
    max_bytes: int
    size_bytes: int
    entries: int
    hits: int
    misses: int
    restored_tokens: int


class PromptCache:
    def __init__(self, max_bytes: int, *, min_tokens: int = MIN_TOKENS) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._entries: OrderedDict[tuple[int, ...], CachedSequence] = OrderedDict()
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0
        self.restored_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, tokens: list[int]) -> bool:
        """Worth saving: long enough, and not already held whole by an entry."""
        if not self.enabled or len(tokens) < self.min_tokens:
            return False
        key = tuple(tokens)
        return not any(entry.tokens[:len(key)] == key for entry in self._entries.values())

    def put(self, tokens: list[int], state: bytes) -> None:
        if not self.enabled or len(state) > self.max_bytes:
            return
        key = tuple(tokens)
        # An entry holding a prefix of this sequence is superseded by it.
        for old in [k for k in self._entries if key[:len(k)] == k]:
            self._drop(old)
        self._entries[key] = CachedSequence(key, state)
        self.size_bytes += len(state)
        while self.size_bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def best_match(self, prompt: list[int]) -> tuple[CachedSequence | None, int]:
        """The entry sharing the longest prefix with `prompt`, and that length."""
        best, length = None, 0
        for entry in self._entries.values():
            n = common_prefix_length(entry.tokens, prompt)
            if n > length:
                best, length = entry, n
        return best, length

    def record(self, entry: CachedSequence | None, restored: int) -> None:
        """Count a lookup; a hit refreshes its entry's place in the LRU order."""
        if entry is None:
            self.misses += 1
            return
        self.hits += 1
        self.restored_tokens += restored
        if entry.tokens in self._entries:
            self._entries.move_to_end(entry.tokens)

    def _drop(self, key: tuple[int, ...]) -> None:
        self.size_bytes -= len(self._entries.pop(key).state)

    def report(self) -> CacheReport:
        return CacheReport(self.max_bytes, self.size_bytes, len(self._entries), self.hits, self.misses,
                           self.restored_tokens)
