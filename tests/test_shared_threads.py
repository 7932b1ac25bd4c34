"""A local fleet's instances share the cores by who is busy: an instance with work takes every
core while the others are idle, and its share while they work too (`shared.core_board`), and
two asked at the same moment both make progress (before core tokens, one of them sometimes
made none until the other had finished). Not timed: each instance reports the threads of its
last decode step in /health/details, and the order in which the tokens of two answers arrive
is counted, not their speed."""

from __future__ import annotations

import threading
import time

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


@pytest.fixture(scope="module")
def instances():
    """A local fleet of two smollm2 instances sharing the cores; their URLs."""
    if CORES < 2:
        pytest.skip("one core leaves nothing to share")
    model_port, gateway_port = free_port_block(2), free_port()
    fleet = ManagedProcess("fleet-shared", ["up", "--model", "smollm2-135m=2", "--port", str(gateway_port)],
                           gateway_port, env={"ARENA_MODEL_SMOLLM2_135M__PORT": str(model_port),
                                                "ARENA_FLEET__SHARED_THREADS": "true"})
    fleet.start()
    try:
        fleet.wait_ready("/health", timeout=240)
        urls = [f"http://127.0.0.1:{model_port + i}" for i in (0, 1)]
        for url in urls:
            wait_until(lambda: httpx.get(url + "/health", timeout=5).status_code == 200, 120, what="instance ready")
            details = httpx.get(url + "/health/details", timeout=5).json()
            assert details["threads_shared"] is True and details["core_wait_share"] is not None
        yield urls
    finally:
        fleet.stop()


def test_an_instance_takes_every_core_alone_and_its_share_when_another_is_busy(instances):
    first, second = instances
    done, statuses = threading.Event(), []
    try:
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


def _stamps(url: str, prompt: str, start: threading.Barrier, out: list[float]) -> None:
    """Ask at the barrier's moment; the arrival time of each streamed token."""
    body = {"model": "smollm2-135m", "prompt": prompt, "max_tokens": 48, "temperature": 0, "stream": True}
    start.wait(timeout=60)
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                out.append(time.monotonic())


def test_two_instances_asked_at_the_same_moment_both_make_progress(instances):
    """Three tries, each a fresh prompt (nothing cached) sent to both at once: while both
    answers are streaming, each brings a good part of its tokens; an instance stalled until the
    other finished would bring none."""
    for attempt in range(3):
        prompt = f"Try {attempt}. Counting from 1 to 1000: 1, 2, 3, 4, 5,"
        start, stamps = threading.Barrier(2), ([], [])
        askers = [threading.Thread(target=_stamps, args=(url, prompt, start, out), daemon=True)
                  for url, out in zip(instances, stamps)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(timeout=300)
        assert all(len(out) >= 40 for out in stamps), [len(out) for out in stamps]
        both_from, both_until = max(out[0] for out in stamps), min(out[-1] for out in stamps)
        during = [sum(1 for t in out if both_from <= t <= both_until) for out in stamps]
        assert min(during) >= 12, f"try {attempt}: tokens while both streamed {during}"
