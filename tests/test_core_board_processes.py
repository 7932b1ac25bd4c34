"""The core board between real processes (no model: a step is a short busy loop): the threads
stepping at any moment never outnumber the pool's cores, every instance makes progress, and an
instance that hangs or is killed while holding cores does not hold the others back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shared.core_board import CoreBoard, SharedThreads

ROOT = Path(__file__).resolve().parent.parent

# One instance on the board: `steps` steps of about 2 ms, recording when each ran and with how
# many threads (only while it holds its tokens), then its waits and overdue steps.
WORKER = """
import json, sys, time
from pathlib import Path
from shared.core_board import CoreBoard, SharedThreads
board, slot, steps, out = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
policy = SharedThreads(CoreBoard(board), slot, 2)
print("ready", flush=True)
sys.stdin.readline()  # go
ran = []
for _ in range(steps):
    threads = policy.for_step()
    start = time.monotonic()
    while time.monotonic() - start < 0.002:
        pass
    ran.append((start, time.monotonic(), threads))
    policy.step_done()
policy.idle()
Path(out).write_text(json.dumps({"ran": ran, "waits": policy.waits, "overdue": policy.overdue}))
"""

# Takes every core of the pool for one step and keeps them (a hung step), until killed.
HOLDER = """
import sys, time
from pathlib import Path
from shared.core_board import CoreBoard, SharedThreads
policy = SharedThreads(CoreBoard(Path(sys.argv[1])), int(sys.argv[2]), 2)
print(policy.for_step(), flush=True)
time.sleep(600)
"""


def _python(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_instances_stepping_at_once_never_hold_more_threads_than_cores(tmp_path):
    board = tmp_path / "board"
    CoreBoard(board, create=True).close()
    steps = 150
    workers = [_python(WORKER, board, slot, steps, tmp_path / f"out{slot}") for slot in range(3)]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # three instances on a pool of two cores, all with work
            worker.stdin.write("go\n")
            worker.stdin.flush()
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in workers:
            worker.kill()
    results = [json.loads((tmp_path / f"out{slot}").read_text()) for slot in range(3)]
    assert all(len(r["ran"]) == steps and r["overdue"] == 0 for r in results)
    assert sum(r["waits"] for r in results) > 0   # three wanted cores at once: someone waited
    events = sorted([(start, 1, threads) for r in results for start, _, threads in r["ran"]] +
                    [(end, 0, -threads) for r in results for _, end, threads in r["ran"]])
    running = most = 0
    for _, _, change in events:                   # at equal times an end comes before a start
        running += change
        most = max(most, running)
    assert most <= 2


def test_a_hung_holder_is_waited_for_a_bounded_time_and_a_killed_one_gives_everything_back(tmp_path):
    board = tmp_path / "board"
    CoreBoard(board, create=True).close()
    holder = _python(HOLDER, board, 1)
    try:
        assert holder.stdout.readline().strip() == "2"     # it holds both cores and hangs
        waiter = SharedThreads(CoreBoard(board), 0, 2, max_wait=0.3)
        assert waiter.for_step() == 1                      # not both: the holder is alive and busy
        assert waiter.overdue == 1 and waiter.waits == 1   # waited until its stamp was 0.3 s old
        now = time.monotonic()
        assert 1 in waiter.board.busy_slots(now)
        assert waiter.board.waiting_slots(now) == [0]      # still asking for a token
        waiter.step_done()
        started = time.monotonic()
        assert waiter.for_step() == 1 and waiter.waits == 1 and waiter.overdue == 2  # no second wait
        assert time.monotonic() - started < 0.3
        waiter.step_done()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        # Dead: its tokens and its cell are free at once, though its busy time is recent.
        assert 1 not in waiter.board.busy_slots(time.monotonic())
        assert waiter.for_step() == 2 and waiter.waits == 1
        waiter.step_done()
        assert waiter.for_step() == 2 and waiter.waits == 1  # and waits again as usual
        SharedThreads(CoreBoard(board), 1, 2).close()      # a restarted instance takes the cell
    finally:
        holder.kill()
