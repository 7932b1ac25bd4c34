"""How the local fleet shares the machine's cores among its model processes (no timing here:
the speed it buys is measured by `arena bench pair`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from shared.catalogue import load_catalogue
from shared.core_board import (
    ALIVE_SECONDS,
    BOARD_DIR_PREFIX,
    BOARD_ENV,
    MAX_POLL_SECONDS,
    POLL_SECONDS,
    SLOT_ENV,
    YIELD_SECONDS,
    BoardDirectory,
    CoreBoard,
    FixedThreads,
    RunQueueWait,
    SharedThreads,
    SlotInUse,
    fair_threads,
    remove_stale_board_dirs,
)
from shared.core_share import CoreShare, share_cores
from shared.local_fleet import LocalFleet


def test_fixed_shares_divide_the_cores_and_pin_when_each_instance_can_have_its_own():
    assert share_cores([None, None], [0, 1], dynamic=False) == [CoreShare(1, (0,), False), CoreShare(1, (1,), False)]
    assert share_cores([None], [0, 1, 2, 3], dynamic=False) == [CoreShare(4, (0, 1, 2, 3), False)]
    assert share_cores([None, None], [0, 1, 2, 3, 4], dynamic=False) == [CoreShare(2, (0, 1), False), CoreShare(2, (2, 3), False)]
    # The cores of a restricted affinity mask, not the first ones of the machine.
    assert share_cores([None, None], [4, 6], dynamic=False) == [CoreShare(1, (4,), False), CoreShare(1, (6,), False)]


def test_fixed_shares_of_more_instances_than_cores_are_one_thread_each_unpinned_and_waiting_passively():
    shares = share_cores([None, None, None], [0, 1], dynamic=False)
    assert shares == [CoreShare(1, None, True)] * 3
    assert shares[0].child_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert share_cores([], [0, 1], dynamic=False) == []


def test_threads_set_in_the_catalogue_are_kept_by_fixed_shares():
    assert share_cores([3, None], [0, 1, 2, 3], dynamic=False) == [CoreShare(3, (0, 1, 2), False), CoreShare(1, (3,), False)]
    # Oversubscribed by the catalogue's choice: kept, but nobody is pinned and nobody spins.
    assert share_cores([2, 2], [0, 1], dynamic=False) == [CoreShare(2, None, True), CoreShare(2, None, True)]
    assert share_cores([None, None], [0, 1], dynamic=False)[0].child_env() == {}


def _fleet(tmp_path: Path, env: dict[str, str]) -> LocalFleet:
    catalogue = load_catalogue(environ=env)
    plan = {key: spec.instances for key, spec in catalogue.models.items() if spec.instances}
    return LocalFleet(catalogue, plan, host="127.0.0.1", port=8080, log_dir=tmp_path)


def _threads_arg(member) -> int:
    args = member.process.args
    return int(args[args.index("--threads") + 1])


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity masks on this platform")
def test_the_local_fleet_passes_each_model_process_its_share(tmp_path):
    fleet = _fleet(tmp_path, {"ARENA_FLEET__SHARED_THREADS": "true"})
    models = [m for m in fleet.members if m.process is not fleet.gateway]
    cores = len(os.sched_getaffinity(0))
    assert len(models) == 3  # the catalogue's two smollm2 instances and one gemma
    assert all(_threads_arg(m) == cores for m in models)  # the most each takes, when the others are idle
    assert [m.share for m in models] == share_cores([None] * 3, sorted(os.sched_getaffinity(0)))
    boards = {m.process.env.get(BOARD_ENV) for m in models}
    assert len(boards) == 1 and None not in boards
    assert sorted(m.process.env[SLOT_ENV] for m in models) == ["0", "1", "2"]
    # One more instance asked for at runtime (the control channel) joins the board, in a free cell.
    share, slot = fleet._share_for(fleet.catalogue.model("smollm2-135m"))
    assert share.shared and slot == 3
    fleet.stop()
    assert not Path(boards.pop()).exists()

    fixed = _fleet(tmp_path, {"ARENA_FLEET__SHARED_THREADS": "false"})
    assert all(_threads_arg(m) == max(1, cores // 3) for m in fixed.members if m.process is not fixed.gateway)

    pinned = _fleet(tmp_path, {"ARENA_MODEL_GEMMA3_270M__THREADS": "3", "ARENA_FLEET__SHARED_THREADS": "false"})
    gemma = next(m for m in pinned.members if m.process.name == "gemma3-270m-0")
    assert _threads_arg(gemma) == 3


def test_automatic_instances_share_one_pool_of_cores_by_default():
    assert share_cores([None, None, None], [0, 1]) == [CoreShare(2, None, False, shared=True)] * 3
    # Explicit threads take cores of their own first; the others share (pinned to) the rest.
    assert share_cores([1, None, None], [0, 1, 2]) == [CoreShare(1, (0,), False),
                                                        CoreShare(2, (1, 2), False, shared=True),
                                                        CoreShare(2, (1, 2), False, shared=True)]
    # One automatic instance has its pool to itself: nothing to share.
    assert share_cores([None], [0, 1]) == [CoreShare(2, (0, 1), False)]
    # Nothing left by the catalogue's explicit threads: the fixed plan (one each, passive).
    assert share_cores([2, None, None], [0, 1]) == [CoreShare(2, None, True), CoreShare(1, None, True),
                                                     CoreShare(1, None, True)]
    board = Path("/tmp/board")
    assert share_cores([None, None], [0, 1])[0].child_env(board, 1) == {BOARD_ENV: "/tmp/board", SLOT_ENV: "1"}
    assert share_cores([None, None], [0, 1], dynamic=False)[0].child_env(board, 1) == {}


def test_fair_threads_divide_the_pool_among_the_busy_instances():
    assert fair_threads(2, [], 0) == 2            # alone: the whole pool
    assert fair_threads(2, [0], 0) == 2
    assert fair_threads(2, [0, 3], 3) == 1
    assert fair_threads(2, [0, 1, 2], 2) == 1     # more busy than cores: never below one
    assert [fair_threads(4, [0, 1, 2], me) for me in (0, 1, 2)] == [2, 1, 1]  # the remainder, to the lowest
    assert [fair_threads(8, [1, 5], me) for me in (1, 5)] == [4, 4]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def step(policy: SharedThreads) -> int:
    """One decode step's threads, given back at once (as the batch scheduler does)."""
    threads = policy.for_step()
    policy.step_done()
    return threads


def test_instances_on_one_board_see_each_other_busy_and_idle(tmp_path):
    path = tmp_path / "board"
    clock = Clock()
    CoreBoard(path, create=True).close()
    # Separate mappings of one file, as separate processes have.
    a = SharedThreads(CoreBoard(path), 0, 2, clock=clock, sleep=clock.sleep, stale=30)
    b = SharedThreads(CoreBoard(path), 1, 2, clock=clock, sleep=clock.sleep, stale=30)
    assert step(a) == 2                           # b idle
    assert step(b) == 1 and step(a) == 1
    b.idle()
    assert step(a) == 2
    step(b)
    clock.now += 31                               # b stopped stepping while marked busy
    assert step(a) == 2
    # A restarted instance clears its own cell (once the old one has let go of it).
    step(b)
    b.close()
    b = SharedThreads(CoreBoard(path), 1, 2, clock=clock, sleep=clock.sleep)
    assert step(a) == 2


def test_a_busy_time_asks_its_owner_s_lock_only_once_it_is_not_fresh(tmp_path):
    """`busy_slots` runs before every decode step: a cell stamped within `ALIVE_SECONDS` was
    written by a live owner and counts without a lock asked; an older one is asked, so a dead
    owner stops counting once its last stamp is that old, long before `stale`."""
    path = tmp_path / "board"
    reader = CoreBoard(path, create=True)
    owner = CoreBoard(path)
    owner.claim(2)
    owner.mark_busy(2, 1000.0)
    assert reader.busy_slots(1000.0 + ALIVE_SECONDS / 2) == [2]
    assert reader.busy_slots(1010.0) == [2]                 # an old stamp: its owner's lock says alive
    owner.close()                                           # killed just after it stamped its step
    assert reader.busy_slots(1000.0 + ALIVE_SECONDS / 2) == [2]   # fresh: not asked (no flock)
    assert reader.busy_slots(1000.0 + 2 * ALIVE_SECONDS) == []  # then asked: gone
    reader.mark_busy(0, 1000.0)
    assert reader.busy_slots(1010.0, me=0) == [0]           # its own cell is never asked
    reader.close()


def test_a_step_never_runs_more_threads_than_the_free_cores(tmp_path):
    """The race of the "0 tok/s" tries: a reads the board before b marks itself busy and takes
    both cores; b must then wait for a token, not run beside a's two threads."""
    clock = Clock()
    CoreBoard(tmp_path / "board", create=True).close()
    a = SharedThreads(CoreBoard(tmp_path / "board"), 0, 2, clock=clock, sleep=clock.sleep)
    b = SharedThreads(CoreBoard(tmp_path / "board"), 1, 2, clock=clock, sleep=clock.sleep, max_wait=0.5)
    assert a.for_step() == 2                      # a's step holds both tokens
    started = clock.now
    assert b.for_step() == 1 and b.waits == 1 and b.overdue == 1  # nothing free: b waited...
    assert clock.now - started >= 0.5             # ...its whole bound (a "hung" in this test)
    b.step_done()
    a.step_done()
    # a stepped again at once: b, marked busy, gets one core and a the other.
    assert a.for_step() == 1 and b.for_step() == 1
    a.step_done()
    b.step_done()
    a.idle()
    assert step(b) == 2


def test_a_waiter_starved_by_instances_that_keep_stepping_waits_for_a_token_however_long(tmp_path):
    """Three busy instances on two cores: a and c keep stepping and b, unlucky, finds no token
    free for longer than `max_wait`. That is contention, not a hang (their busy times move), so
    b keeps waiting rather than running a thread beside theirs; and it waits with pauses that
    grow to `MAX_POLL_SECONDS` (fewer wake-ups beside the holders' threads)."""
    clock = Clock()
    CoreBoard(tmp_path / "board", create=True).close()
    a, c = (SharedThreads(CoreBoard(tmp_path / "board"), slot, 2, clock=clock, sleep=clock.sleep) for slot in (0, 2))
    assert step(a) == 2                           # alone for a moment: both cores
    assert c.for_step() == 1 and a.for_step() == 1 and c.overdue == 0  # now one token each, held
    pauses: list[float] = []
    last = [clock.now]

    def b_sleeps(seconds: float) -> None:         # while b sleeps, the others run
        pauses.append(seconds)
        clock.sleep(seconds)
        if clock.now - last[0] >= 0.02:           # a step of a and one of c every 20 ms
            last[0] = clock.now
            a.for_step()
            c.for_step()
        if clock.now - 1000.0 > 8.0:              # their answers end after 8 s
            a.idle()
            c.idle()

    b = SharedThreads(CoreBoard(tmp_path / "board"), 1, 2, clock=clock, sleep=b_sleeps, max_wait=5.0)
    started = clock.now
    assert b.for_step() == 1 and b.overdue == 0   # never without a token: it got one when they ended
    assert clock.now - started > 8.0 and b.waits == 1
    assert pauses[:4] == [POLL_SECONDS, 2 * POLL_SECONDS, 4 * POLL_SECONDS, MAX_POLL_SECONDS]
    assert max(pauses) == MAX_POLL_SECONDS and len(pauses) < 8.0 / MAX_POLL_SECONDS


def test_an_instance_stepping_without_a_token_past_a_hung_holder_still_asks_for_one(tmp_path):
    clock = Clock()
    board = CoreBoard(tmp_path / "board", create=True)
    a = SharedThreads(CoreBoard(tmp_path / "board"), 0, 2, clock=clock, sleep=clock.sleep)
    b = SharedThreads(CoreBoard(tmp_path / "board"), 1, 2, clock=clock, sleep=clock.sleep, max_wait=0.5)
    assert a.for_step() == 2                      # and a hangs (SIGSTOP) holding both tokens
    hung_at = clock.now
    assert b.for_step() == 1 and b.overdue == 1   # no token: one thread once a's stamp is 0.5 s old
    assert 0.5 <= clock.now - hung_at < 0.5 + 2 * MAX_POLL_SECONDS
    assert board.waiting_slots(clock.now) == [1]  # still asking: a lets b go first when it resumes
    b.step_done()
    now = clock.now
    assert b.for_step() == 1 and b.overdue == 2 and clock.now == now  # the same hang: no new wait
    assert board.waiting_slots(clock.now) == [1]
    b.step_done()
    # a resumes: it lets b go first (a waiter is marked), then takes its share, one core.
    resumed = clock.now
    assert a.for_step() == 1 and clock.now - resumed >= YIELD_SECONDS
    assert b.for_step() == 1 and b.overdue == 2   # a token of its own again
    assert board.waiting_slots(clock.now) == []


def test_an_instance_letting_a_waiter_go_first_is_not_itself_taken_for_a_waiter(tmp_path):
    """Else two instances that have just stepped, each letting the other go first, would both
    sit out the whole bound, their cores idle."""
    clock = Clock()
    board = CoreBoard(tmp_path / "board", create=True)
    seen: list[list[int]] = []

    def a_sleeps(seconds: float) -> None:
        seen.append(board.waiting_slots(clock.now))
        clock.sleep(seconds)

    a = SharedThreads(CoreBoard(tmp_path / "board"), 0, 2, clock=clock, sleep=a_sleeps)
    assert a.for_step() == 2
    b = CoreBoard(tmp_path / "board")
    b.claim(1)
    b.mark_busy(1, clock.now)
    b.mark_waiting(1, clock.now)                     # b waits (and does not run in this test)
    started = clock.now
    assert a.for_step() == 1                         # its share, after letting b go first
    assert seen and all(waiting == [1] for waiting in seen)
    assert YIELD_SECONDS <= clock.now - started < YIELD_SECONDS + 2 * POLL_SECONDS


def test_a_token_counts_as_hung_only_while_its_live_holder_does_not_step(tmp_path):
    path = tmp_path / "board"
    reader = CoreBoard(path, create=True)
    owner, tokens = CoreBoard(path), CoreBoard(path)   # like one process: its cell's lock, its tokens
    owner.claim(3)
    tokens.open_cores(2)
    assert tokens.take_cores(3, 2, 2) == [0, 1]
    owner.mark_busy(3, 1000.0)
    assert not reader.holders_hung(2, 1004.0, 5.0)   # it stepped 4 s ago
    assert reader.holders_hung(2, 1005.0, 5.0)
    owner.mark_busy(3, 1004.5)                         # it stepped again
    assert not reader.holders_hung(2, 1006.0, 5.0)
    owner.close()                                      # the cell's owner is gone: not a hang to wait out
    assert not reader.holders_hung(2, 1100.0, 5.0)
    tokens.give_back([1])
    assert not reader.holders_hung(2, 1100.0, 5.0)    # a free token
    tokens.close()


def test_core_token_files_open_before_any_step_and_a_failed_take_gives_back_what_it_took(tmp_path):
    path = tmp_path / "board"
    CoreBoard(path, create=True).close()
    Path(f"{path}.core1").mkdir()                     # the second core's token file cannot be opened
    with pytest.raises(IsADirectoryError):
        SharedThreads(CoreBoard(path), 0, 2)
    other = CoreBoard(path)
    other.claim(0, wait=0)                            # the failed start let go of its cell...
    other.open_cores(1)
    assert other.take_cores(0, 1, 1) == [0]           # ...and holds no token
    other.close()
    Path(f"{path}.core1").rmdir()

    board = CoreBoard(path)
    board.open_cores(2)
    os.close(board._core_fds[1])                      # locking the second token fails (EBADF)
    with pytest.raises(OSError):
        board.take_cores(0, 2, 2)
    free = CoreBoard(path)
    free.open_cores(1)
    assert free.take_cores(1, 1, 1) == [0]            # the first one was given back
    free.close()


def test_a_board_refuses_slots_and_files_it_cannot_hold(tmp_path):
    board = CoreBoard(tmp_path / "board", create=True)
    with pytest.raises(ValueError):
        SharedThreads(board, board.slots, 2)
    (tmp_path / "other").write_bytes(b"not a board")
    with pytest.raises(ValueError):
        CoreBoard(tmp_path / "other")
    assert FixedThreads(3).for_step() == 3
    # A cell a live instance holds cannot be taken by another.
    SharedThreads(CoreBoard(tmp_path / "board"), 2, 2)
    with pytest.raises(SlotInUse):
        CoreBoard(tmp_path / "board").claim(2, wait=0.05)


class Schedstat:
    """A thread's (ns run, ns waited) as the kernel counts them, advanced by the test."""

    def __init__(self) -> None:
        self.ran = self.waited = 0

    def advance(self, ran_ms: float, waited_ms: float) -> None:
        self.ran += int(ran_ms * 1e6)
        self.waited += int(waited_ms * 1e6)

    def __call__(self) -> tuple[int, int]:
        return self.ran, self.waited


def test_other_work_waiting_for_the_cores_drops_a_shared_instance_to_one_thread(tmp_path):
    clock, stat = Clock(), Schedstat()
    CoreBoard(tmp_path / "board", create=True).close()
    wait = RunQueueWait(0.3, window=0.05, interval=0.25, read=stat, clock=clock)
    policy = SharedThreads(CoreBoard(tmp_path / "board"), 0, 2, contention=wait, clock=clock, sleep=clock.sleep)
    assert step(policy) == 2                       # the first check only takes the baseline

    def window(ran_ms: float, waited_ms: float) -> int:
        stat.advance(ran_ms, waited_ms)
        clock.now += 0.25
        return step(policy)

    assert window(240, 10) == 2                    # 4% waiting: a quiet machine
    assert window(60, 190) == 1 and wait.contended  # 76% waiting: the machine is busy
    assert window(200, 50) == 1                    # 20%: not yet below half the limit
    assert window(240, 10) == 1                    # calm once: two calm windows needed
    assert window(240, 10) == 2                    # quiet again
    # Contention back soon after: twice as many calm windows before more threads again.
    assert window(60, 190) == 1
    assert [window(240, 10) for _ in range(4)] == [1, 1, 1, 2]
    stat.advance(5, 20)
    clock.now += 0.25
    assert step(policy) == 2 and not wait.contended  # too short a window to judge: kept
    # Between reads, the decision is kept without reading.
    stat.advance(0, 10_000)
    assert step(policy) == 2
    assert RunQueueWait(0).check() is False        # limit 0: never contended


def test_automatic_threads_without_a_board_take_every_core_unless_the_machine_is_contended():
    clock, stat = Clock(), Schedstat()
    alone = SharedThreads(None, 0, 2, contention=RunQueueWait(0.3, memory=5, read=stat, clock=clock), clock=clock)
    assert alone.for_step() == 2

    def window(ran_ms: float, waited_ms: float, after: float = 0.25) -> int:
        stat.advance(ran_ms, waited_ms)
        clock.now += after
        return alone.for_step()

    assert window(50, 200) == 1
    assert [window(240, 10) for _ in range(2)] == [1, 2]
    # Contended again long (more than `memory`) after the last spell: two calm windows again.
    assert window(50, 200, after=10) == 1
    assert [window(240, 10) for _ in range(2)] == [1, 2]
    alone.idle()


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity masks on this platform")
def test_a_draining_instance_keeps_its_cell_and_cores_until_it_is_gone(tmp_path):
    fleet = _fleet(tmp_path, {"ARENA_FLEET__SHARED_THREADS": "true"})
    first = fleet.instances[0]
    first.stopping = True                                  # asked to drain, still running
    share, slot = fleet._share_for(fleet.catalogue.model("smollm2-135m"))
    assert share.shared and slot == 3                      # not cell 0, which the draining one holds
    fleet.instances.remove(first)                          # it has exited
    assert fleet._share_for(fleet.catalogue.model("smollm2-135m"))[1] == 0
    fleet.stop()

    cores = sorted(os.sched_getaffinity(0))
    pinned = LocalFleet(load_catalogue(environ={}), {"smollm2-135m": 1}, host="127.0.0.1", port=8080,
                        log_dir=tmp_path)
    only = pinned.instances[0]
    assert only.share.cpus == tuple(cores)                 # alone: every core, pinned
    only.stopping = True
    # Its cores stay its own while it drains: the new instance is not pinned onto them.
    assert pinned._share_for(pinned.catalogue.model("smollm2-135m"))[0].cpus is None
    pinned.stop()


def test_llama_server_instances_take_fixed_cores_beside_a_shared_pool(tmp_path):
    """llama-server's threads are fixed when it starts: it cannot follow the board, so in a
    shared fleet it gets cores of its own and the in-process instances share the rest."""
    fleet = _fleet(tmp_path, {"ARENA_FLEET__SHARED_THREADS": "true", "ARENA_MODEL_GEMMA3_270M__ENGINE": "llama-server"})
    shares = {m.process.name: m.share for m in fleet.instances}
    cores = sorted(os.sched_getaffinity(0))
    gemma = shares["gemma3-270m-0"]
    assert not gemma.shared and gemma.threads == max(1, len(cores) // 3)
    if len(cores) > gemma.threads:
        assert shares["smollm2-135m-0"].shared and shares["smollm2-135m-1"].shared
    assert not fleet._share_for(fleet.catalogue.model("gemma3-270m"))[0].shared
    fleet.stop()


# A supervisor that makes its board's directory and is then killed (nothing removes it).
KILLED_SUPERVISOR = """
import sys, time
from shared.core_board import BoardDirectory
print(BoardDirectory(sys.argv[1]).path, flush=True)
time.sleep(600)
"""


def _killed_supervisors_dir(parent: Path) -> Path:
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", KILLED_SUPERVISOR, str(parent)], cwd=root, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        path = Path(child.stdout.readline().strip())
    finally:
        child.kill()
        child.wait(timeout=10)
    return path


def test_board_directories_left_by_killed_supervisors_are_removed_when_a_fleet_starts(tmp_path):
    orphaned = _killed_supervisors_dir(tmp_path)           # ...but one of its instances lives on
    instance = CoreBoard(orphaned / "board")
    instance.claim(0)
    live = BoardDirectory(str(tmp_path))                   # a running fleet's
    stale = _killed_supervisors_dir(tmp_path)              # (each start cleans: this one last)
    foreign = tmp_path / "arena-cores-not-a-fleet"         # no supervisor's lock: not ours to judge
    foreign.mkdir()
    other = tmp_path / "other-dir"
    other.mkdir()
    (other / "fleet.lock").touch()
    assert stale.name.startswith(BOARD_DIR_PREFIX) and stale.exists() and (stale / "board").exists()

    started = BoardDirectory(str(tmp_path))
    assert not stale.exists()
    assert orphaned.exists() and live.path.exists() and foreign.exists() and other.exists()
    assert (started.board.exists() and CoreBoard(started.board).slots > 0)
    instance.close()                                       # the orphaned instance ends
    assert remove_stale_board_dirs(tmp_path) == [orphaned]
    started.remove()
    live.remove()
    assert not started.path.exists() and not live.path.exists()


def test_a_board_directory_falls_back_to_the_temp_dir_when_ram_cannot_take_it(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    directory = BoardDirectory(str(not_a_dir))             # mkdtemp fails there (an OSError)
    try:
        assert directory.path.parent == Path(tempfile.gettempdir())
        assert CoreBoard(directory.board).slots > 0
    finally:
        directory.remove()
    assert not directory.path.exists()
