"""Clients that post large request bodies again and again from threads (the tests of
`shared.body_parsing`'s bound, on the model service and on the gateway)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import httpx

JSON = {"content-type": "application/json"}


@dataclass
class Flood:
    busy: list[httpx.Response] = field(default_factory=list)  # the 503s
    others: list[httpx.Response] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    futures: list = field(default_factory=list)

    def refused_or_failed(self) -> bool:
        """A 503 came, or a client stopped (its error is raised when the flood ends)."""
        return bool(self.busy) or any(future.done() for future in self.futures)


@contextmanager
def flooding(url: str, bodies: list[bytes], clients: int) -> Iterator[Flood]:
    """`clients` threads, each posting `bodies` in turn (starting at its own) to `url` until the
    block ends; stops them and re-raises what failed in one."""
    flood = Flood()

    def send(turn: int) -> None:
        with httpx.Client(timeout=120) as client:
            while not flood.stopped.is_set():
                response = client.post(url, content=bodies[turn % len(bodies)], headers=JSON)
                (flood.busy if response.status_code == 503 else flood.others).append(response)
                turn += 1

    with ThreadPoolExecutor(clients) as senders:
        flood.futures = [senders.submit(send, turn) for turn in range(clients)]
        try:
            yield flood
        finally:
            flood.stopped.set()
        for future in flood.futures:
            future.result()
