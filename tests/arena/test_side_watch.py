"""SideWatch, the one watchdog of a streaming battle side: no task per chunk, a hung side fails
at its deadline, a side whose instance leaves service fails at once, the stream's own
cancellation (the browser left) still cancels, and the side is marked alive while it streams.
(The same behaviours on real processes: test_hung_model.py, test_gateway_kill.py.)"""

from __future__ import annotations

import asyncio

import pytest

from gateway.arena.battles import SideHung, SideWatch
from tests.harness import async_wait_until

pytestmark = pytest.mark.asyncio


async def chunks(n: int, *, then_hang: bool = False):
    for _ in range(n):
        yield b"data: {}\n\n"
    if then_hang:
        await asyncio.Event().wait()


async def read_all(watch: SideWatch, upstream) -> int:
    n = 0
    while True:
        try:
            await watch.next(upstream)
        except StopAsyncIteration:
            return n
        n += 1


async def test_streaming_many_chunks_starts_no_task_per_chunk():
    loop = asyncio.get_running_loop()
    created = []
    default = loop.get_task_factory()

    def counting(loop, coro, **kwargs):
        task = default(loop, coro, **kwargs) if default else asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)
        return task

    watch = SideWatch(90, lambda: True)
    loop.set_task_factory(counting)
    try:
        watch.start()
        assert await read_all(watch, chunks(500)) == 500
    finally:
        loop.set_task_factory(default)
        watch.close()
    assert len(created) == 1, f"{len(created)} tasks for 500 chunks"


async def test_a_hung_side_fails_at_its_deadline_and_an_unserved_one_at_once():
    watch = SideWatch(0.6, lambda: True)
    watch.start()
    upstream = chunks(3, then_hang=True)
    for _ in range(3):
        await watch.next(upstream)
    with pytest.raises(SideHung) as hung:
        await asyncio.wait_for(watch.next(upstream), 10)
    watch.close()
    assert hung.value.code == "answer_deadline"

    serving = [True]
    watch = SideWatch(90, lambda: serving[0])
    watch.start()
    upstream = chunks(1, then_hang=True)
    await watch.next(upstream)
    waiting = asyncio.ensure_future(watch.next(upstream))
    await asyncio.sleep(0)
    serving[0] = False  # the health monitor took its instance out
    with pytest.raises(SideHung) as hung:
        await asyncio.wait_for(waiting, 5)
    watch.close()
    assert hung.value.code == "instance_unhealthy"


async def test_the_streams_own_cancellation_is_not_taken_for_a_hang():
    watch = SideWatch(0.3, lambda: True)
    watch.start()
    upstream = chunks(0, then_hang=True)
    waiting = asyncio.ensure_future(watch.next(upstream))
    await asyncio.sleep(0)  # let it start waiting
    waiting.cancel()  # the browser left, before the deadline
    with pytest.raises(asyncio.CancelledError):
        await waiting
    watch.close()


async def test_a_streaming_side_is_marked_alive_until_it_ends():
    beats = []

    async def heartbeat():
        beats.append(asyncio.get_running_loop().time())

    watch = SideWatch(90, lambda: True, heartbeat=heartbeat, beat_every=0.3)
    watch.start()
    upstream = chunks(0, then_hang=True)
    waiting = asyncio.ensure_future(watch.next(upstream))
    await async_wait_until(lambda: len(beats) >= 2, 10, what="two heartbeats")
    waiting.cancel()
    watch.close()
    ended = await asyncio.gather(watch._task, *watch._beats, return_exceptions=True)
    assert all(isinstance(e, asyncio.CancelledError) or e is None for e in ended)  # a closed watch beats no more


async def test_a_failing_check_does_not_end_the_watch():
    calls = [0]

    def still_serving() -> bool:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("the registry was being changed")
        return True

    watch = SideWatch(0.6, still_serving)
    watch.start()
    upstream = chunks(0, then_hang=True)
    with pytest.raises(SideHung) as hung:  # the watch went on after the failed check, and saw the hang
        await asyncio.wait_for(watch.next(upstream), 10)
    watch.close()
    assert hung.value.code == "answer_deadline" and calls[0] > 1


async def test_closing_lets_a_heartbeat_write_in_flight_finish():
    """Cancelling a database driver mid-query can spoil its pooled connection: close() leaves a
    beat in flight to end on its own (bounded by beat_timeout)."""
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def heartbeat():
        started.set()
        await release.wait()
        finished.set()

    watch = SideWatch(90, lambda: True, heartbeat=heartbeat, beat_every=0.3, beat_timeout=30)
    watch.start()
    await asyncio.wait_for(started.wait(), 10)
    watch.close()
    release.set()
    await asyncio.wait_for(finished.wait(), 10)
    assert not watch._beats or all(not t.cancelled() for t in watch._beats)

