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

Other work on the machine (not on the board) is seen by `RunQueueWait`: when the decoding thread
spends much of its time ready to run but waiting for a core, threads that meet at barriers
stall each other (measured under a load average of 10-14 on 2 cores: one instance decoding with
2 threads made 1-10 tokens/s, with 1 thread 21-41), so an instance whose threads are automatic
(shared, or every core of a machine of its own) then takes one thread.
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


class RunQueueWait:
    """Whether the calling thread (the one that decodes) waits for a core too much: the share of
    its runnable time it spent waiting on a run queue (the kernel's `schedstat` of the thread),
    over windows of at least `window` seconds of runnable time, read at most every `interval`
    seconds (one small file read; the decision is kept in between). Above `limit` it counts as
    contended. Leaving that takes consecutive windows below half the limit: 2 at first, twice as
    many each time contention comes back within `memory` seconds of the last (up to 64), because
    a step with more threads on a contended machine costs far more than a step with one."""

    MOST_CALM_WINDOWS = 64

    def __init__(self, limit: float, *, window: float = 0.05, interval: float = 0.25, memory: float = 60.0,
                 read: Callable[[], tuple[int, int] | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.interval, self.memory = limit, window, interval, memory
        self._read = read or _thread_schedstat
        self._clock = clock
        self._last: tuple[int, int] | None = None   # read first by the thread that checks
        self._next = 0.0
        self._calm = 0            # consecutive calm windows while contended
        self._calm_needed = 1
        self._calm_since = float("-inf")
        self.contended = False
        self.share = 0.0

    def check(self) -> bool:
        now = self._clock()
        if self.limit <= 0 or now < self._next:
            return self.contended
        self._next = now + self.interval
        sample = self._read()
        if sample is None or self._last is None:
            self._last = sample
            return self.contended
        ran, waited = sample[0] - self._last[0], sample[1] - self._last[1]
        if ran + waited < self.window * 1e9:
            return self.contended  # too little runnable time yet: keep counting from _last
        self._last = sample
        self.share = waited / (ran + waited)
        if not self.contended and self.share > self.limit:
            self.contended, self._calm = True, 0
            recent = now - self._calm_since < self.memory
            self._calm_needed = min(self._calm_needed * 2, self.MOST_CALM_WINDOWS) if recent else 2
        elif self.contended:
            self._calm = self._calm + 1 if self.share < self.limit / 2 else 0
            if self._calm >= self._calm_needed:
                self.contended, self._calm_since = False, now
        return self.contended


def _thread_schedstat() -> tuple[int, int] | None:
    """(ns on a core, ns waiting on a run queue) of the calling thread; None where unknown."""
    try:
        with open("/proc/thread-self/schedstat", "rb") as handle:
            ran, waited, _ = handle.read().split()
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


class SharedThreads:
    """Automatic threads: `pool` cores, divided among the busy instances on `board` when the
    instance shares one (else all of them), and one while other work contends for the machine
    (`contention`)."""

    def __init__(self, board: CoreBoard | None, slot: int, pool: int, *, contention: RunQueueWait | None = None,
                 clock: Callable[[], float] = time.monotonic, stale: float = STALE_SECONDS) -> None:
        if board is not None and not 0 <= slot < board.slots:
            raise ValueError(f"core board slot {slot} is outside 0..{board.slots - 1}")
        self.board, self.slot, self.pool = board, slot, max(1, pool)
        self.contention = contention
        self._clock, self._stale = clock, stale
        if board is not None:
            board.mark_idle(slot)  # a restarted instance starts with its cell cleared

    def for_step(self) -> int:
        if self.board is None:
            busy: list[int] = []
        else:
            now = self._clock()
            self.board.mark_busy(self.slot, now)
            busy = self.board.busy_slots(now, self._stale)
        if self.contention is not None and self.contention.check():
            return 1
        return fair_threads(self.pool, busy, self.slot)

    def idle(self) -> None:
        if self.board is not None:
            self.board.mark_idle(self.slot)
