"""How model processes on one machine share its cores.

llama.cpp splits each decode across its threads and makes them meet at a barrier after every
operation of the graph; its worker threads spin while they wait. Three processes with two
threads each on two cores therefore starve each other: a thread descheduled by the OS holds up
its whole process at the next barrier while its siblings burn the core spinning (measured on 2
cores: two models asked at once fell to 2-4% of their speed alone). The local fleet avoids it:

- threads: the available cores divided among the instances it starts (at least 1), unless
  the catalogue sets `threads` for the model (then that number, as given, and the automatic
  instances share the cores left);
- pinning: when every instance can have cores of its own, each is pinned to a separate block
  of cores (no migration, no neighbour on its cores). When there are more threads than cores,
  none is pinned: only the instances with work are runnable, and the OS puts them on whatever
  core is idle, where a fixed pinning could put the two models of one comparison on the same
  core while the other one idles;
- waiting: an instance whose cores are shared waits for work passively (its threads sleep
  instead of spinning), so an idle or waiting model leaves its core to the busy one.

On GitHub Actions each instance has a runner of its own: `threads` left automatic means all
of that machine's cores (`automatic_threads`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

# llama.cpp's CPU backend, as our build script builds it with GCC, runs its threads with OpenMP
# (libgomp), whose waiting policy this sets when the library loads: PASSIVE makes waiting
# threads sleep rather than spin. (ggml's own threadpool, used only in builds without OpenMP,
# has a polling level instead, llama.cpp server's `--poll`; llama-cpp-python 0.3.36 does not
# bind `llama_attach_threadpool`, so it cannot be set from here.)
PASSIVE_WAIT_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@dataclass(frozen=True)
class CoreShare:
    threads: int
    cpus: tuple[int, ...] | None   # pinned to these cores; None: let the OS place its threads
    passive_wait: bool             # sleep rather than spin while waiting for work

    def child_env(self) -> dict[str, str]:
        return dict(PASSIVE_WAIT_ENV) if self.passive_wait else {}


def available_cpus() -> list[int]:
    """The cores this process may run on (its affinity mask, which containers narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def automatic_threads() -> int:
    """Threads for an instance that has the machine to itself: every available core."""
    return max(1, len(available_cpus()))


def share_cores(explicit_threads: Sequence[int | None], cpus: Sequence[int]) -> list[CoreShare]:
    """One `CoreShare` per instance, in order. `explicit_threads[i]` is the catalogue's
    `threads` for instance i, or None for automatic."""
    count = len(explicit_threads)
    if count == 0:
        return []
    cpus = list(cpus) or [0]
    # Automatic instances share what instances with explicit threads leave.
    automatic = sum(1 for n in explicit_threads if n is None)
    left = len(cpus) - sum(n for n in explicit_threads if n is not None)
    fair = max(1, left // automatic) if automatic else 1
    threads = [explicit if explicit is not None else fair for explicit in explicit_threads]
    if sum(threads) > len(cpus):
        return [CoreShare(n, None, passive_wait=True) for n in threads]
    shares, start = [], 0
    for n in threads:
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
