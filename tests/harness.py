"""One harness for every test that needs a real process: free ports, readiness, clean-up.

Each process runs the real `arena` command line (`python -m shared.cli ...`) on a free port of
127.0.0.1; its output goes to a log file under build/test-logs/ so a failing test can show it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = PROJECT_ROOT / "build" / "test-logs"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    """A child process started by a test; `stop()` always leaves nothing running."""

    name: str
    args: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ManagedProcess":
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.name}-{self.port}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", *self.args],
                cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str = "/health", timeout: float = 120.0) -> "ManagedProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready on {self.url}{path} after {timeout}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left."""
        if not self.process:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=5)


def start_service(model: str, *extra: str, env: dict[str, str] | None = None, port: int | None = None,
                  timeout: float = 180.0) -> ManagedProcess:
    port = port or free_port()
    proc = ManagedProcess(f"service-{model}", ["serve", model, "--host", "127.0.0.1", "--port", str(port), *extra],
                          port, env or {})
    proc.start()
    try:
        return proc.wait_ready("/health", timeout)
    except BaseException:
        proc.stop()
        raise


def start_gateway(*extra: str, env: dict[str, str] | None = None, port: int | None = None,
                  timeout: float = 60.0, ready_path: str = "/health/live") -> ManagedProcess:
    port = port or free_port()
    proc = ManagedProcess("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(port), *extra],
                          port, env or {})
    proc.start()
    try:
        return proc.wait_ready(ready_path, timeout)
    except BaseException:
        proc.stop()
        raise
