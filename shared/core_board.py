"""Threads that follow how many instances of the local fleet are busy, never more than the cores.

With a fixed share, an instance of a three-instance fleet on two cores has one thread even when
it is the only one with work (it then ran at 0.70 of its speed alone on the machine). Instead,
the instances that share a pool of cores announce on a `CoreBoard` whether they have work, and
before each decode step an instance takes `fair_threads`: the whole pool when it is the only busy
one, its share of the pool when others are busy too (llama.cpp takes a new thread count at every
decode: `llama_set_n_threads`).

Reading who is busy is not enough. llama.cpp's threads meet at a barrier after every operation of
the graph (over 900 per decode step of SmolLM2) and spin there, so a step that runs with more
threads than it has cores crawls: one of its threads waits for a core at nearly every barrier
(measured here: a 2-thread step beside a 1-thread decoder in another process took 350-820 ms at
the median instead of 10-30 ms, a 64-token prefill 7 s instead of 0.5-0.9 s). An instance that
read the board just before another one marked itself busy took both cores for a step that then
lasted as long as the other's whole answer: the "0 tok/s" tries of two models at once. So each
thread of a step holds one of the pool's **core tokens** (`flock` on one small file per core,
taken without waiting, given back after the step): the threads running in the pool never
outnumber its cores, whatever the timing. An instance that finds no token free waits (polling,
with pauses from half a millisecond doubling to 4 ms: every wake-up of a waiter preempts a
holder's thread for a moment) and says so on the board; one that has just stepped lets such a
waiter go first. The kernel drops the locks of a process that dies, so a killed instance never
keeps its tokens. The board records which instance holds each token: a waiter steps with one
thread without a token only while every token is held by a live instance whose busy time has
not moved for `MAX_WAIT_SECONDS` (it took them and hangs: SIGSTOP; a single step longer than
that, which a crawling machine can make, looks the same), never merely because tokens are
contended, however long that lasts; it still marks itself waiting then, so the holders let it go
first once they step again.

The board is a small file the fleet's supervisor creates and every instance maps into memory
(`mmap`): per instance one 8-byte cell with the monotonic time of its last decode step while it
has work (0 when it has none) and one with the time it last waited for a token; per core, the
cell of the instance holding its token. Each instance holds a lock on a file of its own cell
(`claim`) for its life, so a cell whose owner is gone is not counted busy, and a second live
process cannot take a cell in use. Every token file is opened when the instance starts, so an
error opening one fails the start, not a step half-way through taking its tokens.

Other work on the machine (not on the board) is seen by `RunQueueWait`: when the decoding thread
spends much of its time ready to run but waiting for a core, threads that meet at barriers
stall each other (measured under a load average of 10-14 on 2 cores: one instance decoding with
2 threads made 1-10 tokens/s, with 1 thread 21-41), so an instance whose threads are automatic
(shared, or every core of a machine of its own) then takes one thread.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

BOARD_SLOTS = 32          # instances one board can hold (a local fleet has a handful)
STALE_SECONDS = 30.0      # longer than any one decode step (a 512-token prefill on one thread)
BOARD_CORES = 256         # cores of a pool whose token holders the board records (a larger pool is cut to it)
WAITING_SECONDS = 0.1     # a waiter refreshes its cell every poll; older means it stopped waiting
POLL_SECONDS = 0.0005     # the first pause between looks for a free core token...
MAX_POLL_SECONDS = 0.004  # ...doubled up to this (fewer wake-ups beside the holders' threads)
YIELD_SECONDS = 0.01      # longest an instance that has just stepped lets a waiter go first (> MAX_POLL)
MAX_WAIT_SECONDS = 5.0    # a token holder whose busy time has not moved for this long hangs
CLAIM_SECONDS = 1.0       # a cell whose lock stays taken this long belongs to a live instance
ALIVE_SECONDS = 0.05      # a busy time this recent was written by a live owner: no lock asked (> a decode step)
_CELL = 8                 # one float64
_BOARD_BYTES = (2 * BOARD_SLOTS + BOARD_CORES) * _CELL

RAM_DIR = "/dev/shm"          # where a board's directory goes when the platform has it (a tmpfs)
BOARD_DIR_PREFIX = "arena-cores-"
FLEET_LOCK = "fleet.lock"     # held by the fleet's supervisor while its board is in use

# Environment the local fleet sets for an instance that shares a pool (read by its settings).
BOARD_ENV = "ARENA_SERVICE_CORE_BOARD"
SLOT_ENV = "ARENA_SERVICE_CORE_SLOT"


class SlotInUse(RuntimeError):
    """Another live process holds this cell of the board."""


def _lock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class CoreBoard:
    """The mapped file and its lock files (`<board>.core<i>`: the core tokens; `<board>.slot<i>`:
    each cell's owner). The file holds, per instance, its busy and waiting times, and per core
    the cell of the instance holding its token (cell + 1; 0 while nobody holds it). Only
    instance `slot` writes its cells, and only a token's holder its core's cell; anyone reads
    every cell (an aligned 8-byte store is atomic on the platforms llama.cpp runs on, so a reader
    sees either the old or the new value). Each `CoreBoard` opens its own lock files: separate
    objects, even in one process, lock as separate processes do."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.write_bytes(bytes(_BOARD_BYTES))
        fd = os.open(self.path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            if size != _BOARD_BYTES:
                raise ValueError(f"{self.path} is not a core board ({size} bytes)")
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        cells = memoryview(self._map).cast("d")
        self._busy = cells[:BOARD_SLOTS]
        self._waiting = cells[BOARD_SLOTS:2 * BOARD_SLOTS]
        self._holder = cells[2 * BOARD_SLOTS:]
        self._slot_fds: dict[int, int] = {}
        self._core_fds: list[int] = []

    @property
    def slots(self) -> int:
        return len(self._busy)

    @property
    def cores(self) -> int:
        return len(self._holder)

    # -- cells ------------------------------------------------------------------------------
    def mark_busy(self, slot: int, now: float) -> None:
        self._busy[slot] = now

    def mark_idle(self, slot: int) -> None:
        self._busy[slot] = 0.0
        self._waiting[slot] = 0.0

    def mark_waiting(self, slot: int, now: float) -> None:
        self._waiting[slot] = now

    def clear_waiting(self, slot: int) -> None:
        self._waiting[slot] = 0.0

    def busy_slots(self, now: float, stale: float = STALE_SECONDS, *, me: int | None = None) -> list[int]:
        """Slots marked busy within `stale` seconds whose owner is alive (`me` is not checked).
        A busy time under `ALIVE_SECONDS` old was written by its owner that recently: an
        instance that keeps stepping is counted without asking its lock (this runs before every
        decode step); an older one (a long step, a hang, a death) is checked with `alive`, so a
        killed instance is counted at most `ALIVE_SECONDS` after its last step began."""
        return [slot for slot, stamp in enumerate(self._busy.tolist())
                if stamp > 0.0 and now - stamp < stale
                and (slot == me or now - stamp < ALIVE_SECONDS or self.alive(slot))]

    def waiting_slots(self, now: float, *, me: int | None = None) -> list[int]:
        return [slot for slot, stamp in enumerate(self._waiting.tolist())
                if slot != me and stamp > 0.0 and now - stamp < WAITING_SECONDS]

    # -- owners -----------------------------------------------------------------------------
    def _open(self, kind: str, index: int) -> int:
        return os.open(f"{self.path}.{kind}{index}", os.O_RDWR | os.O_CREAT, 0o600)

    def _slot_fd(self, slot: int) -> int:
        fd = self._slot_fds.get(slot)
        if fd is None:
            fd = self._slot_fds[slot] = self._open("slot", slot)
        return fd

    def claim(self, slot: int, *, wait: float = CLAIM_SECONDS) -> None:
        """Hold `slot`'s owner lock for as long as this board is open; `SlotInUse` if another
        live process keeps it for `wait` seconds (a reader's check holds it for microseconds)."""
        fd = self._slot_fd(slot)
        deadline = time.monotonic() + wait
        while not _lock(fd, fcntl.LOCK_EX):
            if time.monotonic() >= deadline:
                raise SlotInUse(f"cell {slot} of the core board {self.path} belongs to a running instance")
            time.sleep(0.01)

    def alive(self, slot: int) -> bool:
        """Whether a live process holds `slot` (its lock cannot be shared)."""
        fd = self._slot_fd(slot)
        if not _lock(fd, fcntl.LOCK_SH):
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    # -- core tokens ------------------------------------------------------------------------
    def open_cores(self, pool: int) -> None:
        """Open the token files of the pool's first `pool` cores, all now (where opening fails,
        it fails before any token is taken, not in the middle of a step)."""
        while len(self._core_fds) < min(pool, self.cores):
            self._core_fds.append(self._open("core", len(self._core_fds)))

    def take_cores(self, slot: int, pool: int, want: int) -> list[int]:
        """Take up to `want` of the pool's free core tokens for instance `slot`, without waiting;
        their indices. Whatever goes wrong half-way gives back what was taken."""
        if pool > len(self._core_fds):
            raise ValueError(f"the token files of {pool} cores are not open (open_cores)")
        taken: list[int] = []
        try:
            for core in range(pool):
                if len(taken) == want:
                    break
                if _lock(self._core_fds[core], fcntl.LOCK_EX):
                    taken.append(core)
                    self._holder[core] = slot + 1
        except BaseException:
            self.give_back(taken)
            raise
        return taken

    def give_back(self, cores: Sequence[int]) -> None:
        for core in cores:
            self._holder[core] = 0.0
            fcntl.flock(self._core_fds[core], fcntl.LOCK_UN)

    def holders_hung(self, pool: int, now: float, after: float) -> bool:
        """Whether every token of the pool is held by a live instance whose busy time has not
        moved for `after` seconds (it took them and hangs; one that keeps stepping stamps its
        cell at every step). A token whose holder is not known yet (it is being taken) or whose
        recorded holder is gone does not count as hung."""
        for core in range(min(pool, self.cores)):
            holder = int(self._holder[core]) - 1
            if not 0 <= holder < self.slots:
                return False
            stamp = self._busy[holder]
            if stamp <= 0.0 or now - stamp < after or not self.alive(holder):
                return False
        return True

    def close(self) -> None:
        for fd in [*self._slot_fds.values(), *self._core_fds]:
            os.close(fd)  # drops this board's locks
        self._slot_fds.clear()
        self._core_fds.clear()
        self._busy.release()
        self._waiting.release()
        self._holder.release()
        self._map.close()


class BoardDirectory:
    """The directory of a fleet's board: in RAM (`RAM_DIR`) where it can be written, else in the
    temp directory. Its supervisor holds a lock in it (`FLEET_LOCK`) until `remove`, so the
    directory of a supervisor that was killed (SIGKILL: nothing removed it) is found and removed
    by the next fleet started on the machine, once none of its instances lives either."""

    def __init__(self, parent: str | None = None) -> None:
        if parent is None and os.path.isdir(RAM_DIR):
            parent = RAM_DIR
        try:
            staging = Path(tempfile.mkdtemp(prefix="." + BOARD_DIR_PREFIX, dir=parent))
        except OSError as exc:
            if parent is None:
                raise
            log.warning("cannot make the core board's directory in %s (%s); using the temp directory", parent, exc)
            staging = Path(tempfile.mkdtemp(prefix="." + BOARD_DIR_PREFIX))
        # Locked before it takes the name a cleaner looks for, so a live fleet's is never taken for stale.
        self._lock_fd = os.open(staging / FLEET_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.path = staging.with_name(staging.name[1:])
        os.rename(staging, self.path)
        remove_stale_board_dirs(self.path.parent)
        self.board = self.path / "board"
        CoreBoard(self.board, create=True).close()

    def remove(self) -> None:
        if self._lock_fd >= 0:
            shutil.rmtree(self.path, ignore_errors=True)
            os.close(self._lock_fd)
            self._lock_fd = -1


def remove_stale_board_dirs(parent: Path) -> list[Path]:
    """Remove the board directories in `parent` that are ours (the prefix, our uid) and whose
    supervisor and instances are all gone (none of their locks held); the ones removed."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not (entry.name.startswith(BOARD_DIR_PREFIX) and entry.is_dir(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_uid == os.getuid()):
                continue
            path = Path(entry.path)
            fd = os.open(path / FLEET_LOCK, os.O_RDWR)  # none: not a fleet's board directory
        except OSError:
            continue
        try:
            if _lock(fd, fcntl.LOCK_EX) and not any(_held(slot) for slot in path.glob("board.slot*")):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _held(path: Path) -> bool:
    """Whether a live process holds the lock on `path` (a cell's owner)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def fair_threads(pool: int, busy: Sequence[int], me: int) -> int:
    """Threads for instance `me` when the instances in `busy` (with `me`) share `pool` cores:
    the pool divided among them, the remainder to the lowest slots, never less than one."""
    sharing = sorted({*busy, me})
    base, extra = divmod(pool, len(sharing))
    return max(1, base + (1 if sharing.index(me) < extra else 0))


class ThreadPolicy(Protocol):
    """What the batch scheduler asks before each decode step, tells after it (`step_done`) and
    when it runs out of work."""

    def for_step(self) -> int: ...

    def step_done(self) -> None: ...

    def idle(self) -> None: ...


class FixedThreads:
    """An instance with cores of its own (alone on a machine, pinned, or `threads` set in the
    catalogue): the same count at every step."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def for_step(self) -> int:
        return self.threads

    def step_done(self) -> None:
        pass

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
    (`contention`). On a board, each thread of a step holds a core token (see the module)."""

    def __init__(self, board: CoreBoard | None, slot: int, pool: int, *, contention: RunQueueWait | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 stale: float = STALE_SECONDS, max_wait: float = MAX_WAIT_SECONDS) -> None:
        if board is not None and not 0 <= slot < board.slots:
            raise ValueError(f"core board slot {slot} is outside 0..{board.slots - 1}")
        self.board, self.slot, self.pool = board, slot, max(1, pool)
        self.contention = contention
        self._clock, self._sleep, self._stale, self._max_wait = clock, sleep, stale, max_wait
        self._held: list[int] = []
        self._stepped_with_tokens = False  # the last step held tokens: let a waiter have them first
        self._hang_seen = False            # the holders hang: said once in the log, until a token is free
        self.waits = 0          # steps that waited for a core token
        self.overdue = 0        # steps run with one thread and no token, because the holders hang
        if board is not None:
            self.pool = min(self.pool, board.cores)
            board.claim(slot)
            try:
                board.open_cores(self.pool)
            except BaseException:
                board.close()  # a start that fails holds nothing
                raise
            board.mark_idle(slot)  # a restarted instance starts with its cells cleared

    def for_step(self) -> int:
        self.step_done()  # never hold tokens from an earlier step
        wanted = 1 if self.contention is not None and self.contention.check() else self.pool
        board = self.board
        if board is None:
            return wanted
        now = self._clock()
        board.mark_busy(self.slot, now)
        wanted = min(wanted, fair_threads(self.pool, board.busy_slots(now, self._stale, me=self.slot), self.slot))
        if self._stepped_with_tokens and board.waiting_slots(now, me=self.slot):
            self._let_waiters_go(board, now)
        pause, waited = POLL_SECONDS, False
        while True:
            self._held = board.take_cores(self.slot, self.pool, wanted)
            self._stepped_with_tokens = bool(self._held)
            if self._held:
                board.clear_waiting(self.slot)
                self._hang_seen = False
                return len(self._held)
            now = self._clock()
            # Marked waiting even when about to step without a token, so holders let us go first.
            board.mark_busy(self.slot, now)
            board.mark_waiting(self.slot, now)
            if board.holders_hung(self.pool, now, self._max_wait):
                self.overdue += 1
                if not self._hang_seen:
                    self._hang_seen = True
                    log.warning("every core token is held by an instance that has not stepped for %.1f s "
                                "(it hangs?); stepping with one thread until a token is free", self._max_wait)
                return 1
            if not waited:
                waited, self.waits = True, self.waits + 1
            self._sleep(pause)
            pause = min(2 * pause, MAX_POLL_SECONDS)

    def _let_waiters_go(self, board: CoreBoard, now: float) -> None:
        """We have just given our tokens back: let the instances waiting for one take them first
        (until none waits, or `YIELD_SECONDS`, longer than a waiter's longest pause). Not marked
        waiting meanwhile: two instances letting each other go first would both wait it out."""
        until = now + YIELD_SECONDS
        while now < until:
            self._sleep(POLL_SECONDS)
            now = self._clock()
            if not board.waiting_slots(now, me=self.slot):
                break

    def step_done(self) -> None:
        if self._held:
            self.board.give_back(self._held)
            self._held = []

    def idle(self) -> None:
        self.step_done()
        self._stepped_with_tokens = False
        if self.board is not None:
            self.board.mark_idle(self.slot)

    def close(self) -> None:
        """Give everything back (the cell's owner lock too): for a process that goes on."""
        self.idle()
        if self.board is not None:
            self.board.close()
