"""Stop work for a client that has gone away.

`cancel_on_disconnect(receive)` runs its block in the calling task while one watcher task reads
the ASGI `receive` channel; when the client disconnects, the watcher cancels the block. That
cancellation is absorbed (the block just ends early, `watch.left` is True); any other
cancellation goes on as usual. The model service uses it so an abandoned request frees its slot,
the gateway so an abandoned relay closes its upstream request.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from starlette.types import Receive


@dataclass
class DisconnectWatch:
    left: bool = False


def _still_cancelled(task: asyncio.Task) -> bool:
    """After absorbing the cancellation we caused: was the task also cancelled by someone else?"""
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    return bool(uncancel and uncancel() > 0)


@asynccontextmanager
async def cancel_on_disconnect(receive: Receive) -> AsyncIterator[DisconnectWatch]:
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch()

    async def watch_receive() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        watch.left = True  # also once a response is complete: then there is nothing to cancel
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch_receive())
    try:
        yield watch
    except asyncio.CancelledError:
        if not watch.left or _still_cancelled(task):
            raise
    finally:
        watcher.cancel()
