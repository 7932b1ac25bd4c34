"""A local fleet's instances share the cores by who is busy: an instance with work takes every
core while the others are idle, and its share while they work too (`shared.core_board`). Not
timed: each instance reports the threads of its last decode step in /health/details."""

from __future__ import annotations

import threading

import httpx
import pytest

from services.bench_support import free_port_block
from shared.core_share import available_cpus
from tests.harness import ManagedProcess, free_port, wait_until

CORES = len(available_cpus())


def _count(url: str, done: threading.Event, statuses: list[int]) -> threading.Thread:
    """Keep an instance decoding (a long greedy count) until `done`, in the background."""
    def run() -> None:
        body = {"model": "smollm2-135m", "prompt": "Counting from 1 to 1000: 1, 2, 3, 4, 5,", "max_tokens": 1000,
                "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as response:
            statuses.append(response.status_code)
            for _ in response.iter_lines():
                if done.is_set():
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _threads(url: str, statuses: list[int]) -> tuple[int, int]:
    assert all(status == 200 for status in statuses), statuses
    details = httpx.get(url + "/health/details", timeout=10).json()
    return details["slots"]["active"], details["threads_in_use"]


@pytest.mark.skipif(CORES < 2, reason="one core leaves nothing to share")
def test_an_instance_takes_every_core_alone_and_its_share_when_another_is_busy():
    model_port, gateway_port = free_port_block(2), free_port()
    fleet = ManagedProcess("fleet-shared", ["up", "--model", "smollm2-135m=2", "--port", str(gateway_port)],
                           gateway_port, env={"ARENA_MODEL_SMOLLM2_135M__PORT": str(model_port),
                                                "ARENA_FLEET__SHARED_THREADS": "true"})
    fleet.start()
    done, statuses = threading.Event(), []
    try:
        fleet.wait_ready("/health", timeout=240)
        first, second = (f"http://127.0.0.1:{model_port + i}" for i in (0, 1))
        for url in (first, second):
            wait_until(lambda: httpx.get(url + "/health", timeout=5).status_code == 200, 120, what="instance ready")
            details = httpx.get(url + "/health/details", timeout=5).json()
            assert details["threads_shared"] is True and details["core_wait_share"] is not None

        _count(first, done, statuses)
        # Alone: every core (a fixed share would be one core of two).
        wait_until(lambda: _threads(first, statuses) == (1, CORES), 60, what="the busy instance alone uses every core")
        _count(second, done, statuses)

        def shared() -> bool:
            (busy_a, threads_a), (busy_b, threads_b) = _threads(first, statuses), _threads(second, statuses)
            return busy_a == busy_b == 1 and threads_a + threads_b == CORES and threads_a < CORES

        # Both busy: the cores divided between them, none left over, none oversubscribed.
        wait_until(shared, 60, what="two busy instances share the cores")
    finally:
        done.set()
        fleet.stop()
