"""How model processes on one machine share its cores.

llama.cpp splits each decode across its threads and makes them meet at a barrier after every
operation of the graph; its worker threads spin while they wait. Three processes with two
threads each on two cores therefore starve each other: a thread descheduled by the OS holds up
its whole process at the next barrier while its siblings burn the core spinning (measured on 2
cores: two models asked at once fell to 2-4% of their speed alone). The local fleet avoids it:

- shared threads (`fleet.shared_threads: true`, the default): instances whose `threads` is
  automatic (on the in-process engine) share a pool of cores (the cores the catalogue's explicit
  `threads` leave) and each takes, before every decode step, the pool divided among the
  instances busy at that moment (`shared.core_board`): all of it when it is the only one with
  work, its share when others have work too, each thread holding a core token for the step so
  that the threads stepping never outnumber the pool's cores. They are not pinned inside the
  pool, so the OS spreads the busy ones over idle cores, and their threads wait as OpenMP does
  by default (spin briefly, then sleep): passive waiting would make every barrier of a
  multi-threaded decode a sleep and a wake-up;
- fixed threads (`fleet.shared_threads: false`, `dynamic=False`, or a model with `threads` in the catalogue): the available
  cores divided among the instances (at least 1), or the catalogue's number as given;
- pinning of fixed shares: when every instance can have cores of its own, each is pinned to
  a separate block of cores. When there are more threads than cores, none is pinned and they
  wait passively (their threads sleep instead of spinning), so an idle or waiting model leaves
  its core to the busy one.

On GitHub Actions each instance has a runner of its own: `threads` left automatic means all
of that machine's cores (`automatic_threads`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from shared.catalogue import ModelSpec
from shared.core_board import BOARD_ENV, SLOT_ENV

# llama.cpp's CPU backend, as our build script builds it with GCC, runs its threads with OpenMP
# (libgomp), whose waiting policy this sets when the library loads: PASSIVE makes waiting
# threads sleep rather than spin. (ggml's own threadpool, used only in builds without OpenMP,
# has a polling level instead, llama.cpp server's `--poll`; llama-cpp-python 0.3.36 does not
# bind `llama_attach_threadpool`, so it cannot be set from here.)
PASSIVE_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class CoreShare:
    threads: int                   # shared: the most it takes (when it is the only one busy)
    cpus: tuple[int, ...] | None   # pinned to these cores; None: let the OS place its threads
    passive_wait: bool             # sleep rather than spin while waiting for work
    shared: bool = False           # threads follow the busy instances on the fleet's core board

    def child_env(self, board: Path | None = None, slot: int = 0) -> dict[str, str]:
        env = dict(PASSIVE_WAIT_ENV) if self.passive_wait else {}
        if self.shared and board is not None:
            env.update({BOARD_ENV: str(board), SLOT_ENV: str(slot)})
        return env


def available_cpus() -> list[int]:
    """The cores this process may run on (its affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def automatic_threads() -> int:
    """Threads for an instance that has the machine to itself: every available core."""
    return max(1, len(available_cpus()))


def with_automatic_threads(spec: ModelSpec) -> ModelSpec:
    """`spec` with its `threads` set: the catalogue's, else every available core."""
    return spec if spec.threads is not None else spec.model_copy(update={"threads": automatic_threads()})


def share_cores(explicit_threads: Sequence[int | None], cpus: Sequence[int], *,
                dynamic: bool = True) -> list[CoreShare]:
    """One `CoreShare` per instance, in order. `explicit_threads[i]` is the catalogue's
    `threads` for instance i, or None for automatic; `dynamic`: automatic instances share their
    pool by how many are busy (else each has a fixed part of it)."""
    count = len(explicit_threads)
    if count == 0:
        return []
    cpus = list(cpus) or [0]
    # Automatic instances share what instances with explicit threads leave.
    automatic = sum(1 for n in explicit_threads if n is None)
    taken = sum(n for n in explicit_threads if n is not None)
    left = len(cpus) - taken
    if dynamic and automatic > 1 and left >= 1:
        return _shared_pool(explicit_threads, cpus, taken)
    fair = max(1, left // automatic) if automatic else 1
    threads = [explicit if explicit is not None else fair for explicit in explicit_threads]
    if sum(threads) > len(cpus):
        return [CoreShare(n, None, passive_wait=True) for n in threads]
    shares, start = [], 0
    for n in threads:
        shares.append(CoreShare(n, tuple(cpus[start:start + n]), passive_wait=False))
        start += n
    return shares


def _shared_pool(explicit_threads: Sequence[int | None], cpus: list[int], taken: int) -> list[CoreShare]:
    """Explicit instances pinned to blocks of their own, the automatic ones sharing the rest."""
    pool = tuple(cpus[taken:])
    shares, start = [], 0
    for n in explicit_threads:
        if n is None:
            # Pinned to the pool only when explicit instances took cores out of it.
            shares.append(CoreShare(len(pool), pool if taken else None, passive_wait=False, shared=True))
        else:
            shares.append(CoreShare(n, tuple(cpus[start:start + n]), passive_wait=False))
            start += n
    return shares


def pin(pid: int, cpus: tuple[int, ...] | None) -> bool:
    """Pin a process that has not started its threads yet (its later threads inherit the mask).
    False where the platform cannot."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, cpus)
    except OSError:
        return False
    return True
