"""From generated token bytes to safe text deltas.

Two things make this more than `piece.decode()`: a UTF-8 character may be split across tokens,
and a stop string may be split across tokens too. Text that could still turn into a stop string
is held back until it is known not to; a matched stop string is never emitted.
"""

from __future__ import annotations

import codecs


class StopStringFilter:
    """Holds back text that may be the start of a stop string."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self._longest = max((len(s) for s in self.stops), default=0)

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; returns (text safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        self._pending += text
        earliest = -1
        for stop in self.stops:
            at = self._pending.find(stop)
            if at != -1 and (earliest == -1 or at < earliest):
                earliest = at
        if earliest != -1:
            out = self._pending[:earliest]
            self._pending = ""
            return out, True
        keep = self._held_suffix_length()
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def _held_suffix_length(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        pending = self._pending
        for length in range(min(len(pending), self._longest - 1), 0, -1):
            tail = pending[-length:]
            if any(stop.startswith(tail) for stop in self.stops):
                return length
        return 0

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


class TextAssembler:
    """Turns a sequence's token bytes into text deltas, honouring stop strings."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopStringFilter(stops)

    def push(self, piece: bytes) -> tuple[str, bool]:
        return self._stops.push(self._decoder.decode(piece))

    def finish(self) -> str:
        """The rest of the text at the end of generation (not after a stop string)."""
        return self._stops.push(self._decoder.decode(b"", final=True))[0] + self._stops.flush()
