"""One harness for every test that needs a real process: free ports, readiness, clean-up.

Each process runs a real command (by default the `arena` command line, `python -m shared.cli`)
on a free port of 127.0.0.1, through the same `ChildProcess` the local fleet uses; its output
goes to build/test-logs/ so a failing test can show it.
"""

from __future__ import annotations

from shared.processes import PROJECT_ROOT, ChildProcess, free_port

LOG_DIR = PROJECT_ROOT / "build" / "test-logs"

__all__ = ["LOG_DIR", "PROJECT_ROOT", "ManagedProcess", "free_port", "start_gateway", "start_service"]


class ManagedProcess(ChildProcess):
    """A child process started by a test; `stop()` always leaves nothing running."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str] | None = None,
                 module: str = "shared.cli") -> None:
        super().__init__(name, args, port=port, env=env, module=module, log_path=LOG_DIR / f"{name}-{port}.log")

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)


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
