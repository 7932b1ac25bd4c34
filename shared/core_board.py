"""Threads that follow how many instances of the local fleet are busy.

With a fixed share, an instance of a three-instance fleet on two cores has one thread even when
it is the only one with work (it then ran at 0.71 of its speed alone on the machine). Instead,
the instances that share a pool of cores announce on a `CoreBoard` whether they have work, and
before each decode step an instance takes `fair_threads`: the whole pool when it is the only busy
one, its share of the pool when others are busy too (llama.cpp takes a new thread count at every
decode: `llama_set_n_threads`).

The board is a small file the fleet's supervisor creates and every instance maps into memory
(`mmap`): one 8-byte cell per instance holding the monotonic time of its last decode step while
it has work, 0 when it has none. Reading and writing it are memory accesses, no system call, so
an instance looks at it before every step. A cell not refreshed for `STALE_SECONDS` counts as
idle, so an instance that crashed while busy does not hold the others back for long.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Callable, Protocol, Sequence

BOARD_SLOTS = 32          # instances one board can hold (a local fleet has a handful)
STALE_SECONDS = 30.0      # longer than any one decode step (a 512-token prefill on one thread)
_CELL = 8                 # one float64 per instance

# Environment the local fleet sets for an instance that shares a pool (read by its settings).
BOARD_ENV = "ARENA_SERVICE_CORE_BOARD"
SLOT_ENV = "ARENA_SERVICE_CORE_SLOT"


class CoreBoard:
    """The mapped file. Only instance `slot` writes cell `slot`; anyone reads every cell (an
    aligned 8-byte store is atomic on the platforms llama.cpp runs on, so a reader sees either
    the old or the new time)."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.write_bytes(bytes(BOARD_SLOTS * _CELL))
        fd = os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size < _CELL or size % _CELL:
                raise ValueError(f"{self.path} is not a core board ({size} bytes)")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._cells = memoryview(self._map).cast("d")

    @property
    def slots(self) -> int:
        return len(self._cells)

    def mark_busy(self, slot: int, now: float) -> None:
        self._cells[slot] = now

    def mark_idle(self, slot: int) -> None:
        self._cells[slot] = 0.0

    def busy_slots(self, now: float, stale: float = STALE_SECONDS) -> list[int]:
        return [slot for slot, stamp in enumerate(self._cells.tolist()) if stamp > 0.0 and now - stamp < stale]

    def close(self) -> None:
        self._cells.release()
        self._map.close()


def fair_threads(pool: int, busy: Sequence[int], me: int) -> int:
    """Threads for instance `me` when the instances in `busy` (with `me`) share `pool` cores:
    the pool divided among them, the remainder to the lowest slots, never less than one."""
    sharing = sorted({*busy, me})
    base, extra = divmod(pool, len(sharing))
    return max(1, base + (1 if sharing.index(me) < extra else 0))


class ThreadPolicy(Protocol):
    """What the batch scheduler asks before each decode step and tells when it runs out of work."""

    def for_step(self) -> int: ...

    def idle(self) -> None: ...


class FixedThreads:
    """An instance with cores of its own (alone on a machine, pinned, or `threads` set in the
    catalogue): the same count at every step."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def for_step(self) -> int:
        return self.threads

    def idle(self) -> None:
        pass


class SharedThreads:
    """An instance sharing `pool` cores with the others on `board`."""

    def __init__(self, board: CoreBoard, slot: int, pool: int, *,
                 clock: Callable[[], float] = time.monotonic, stale: float = STALE_SECONDS) -> None:
        if not 0 <= slot < board.slots:
            raise ValueError(f"core board slot {slot} is outside 0..{board.slots - 1}")
        self.board, self.slot, self.pool = board, slot, max(1, pool)
        self._clock, self._stale = clock, stale
        self.board.mark_idle(slot)  # a restarted instance starts with its cell cleared

    def for_step(self) -> int:
        now = self._clock()
        self.board.mark_busy(self.slot, now)
        return fair_threads(self.pool, self.board.busy_slots(now, self._stale), self.slot)

    def idle(self) -> None:
        self.board.mark_idle(self.slot)
