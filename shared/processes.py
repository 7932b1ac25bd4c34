"""Child processes of the project's own commands: free ports, readiness, and clean stops.

Used by the local fleet (`arena up`), the benchmarks and the test harness, so that a process is
started, awaited and stopped the same way everywhere, and none is left behind.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Callable

import httpx

from shared.paths import checkout_root


def free_port(host: str = "127.0.0.1") -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In the child: be sent `sig` if the parent dies, so a killed supervisor leaves no orphans."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ChildProcess:
    """`python -m MODULE ARGS` (by default an `arena` command) run as a child, in its own process
    group, logging to a file. `catalogue`, when given, is passed to an `arena` command as
    ``--catalogue``, so the child reads the same file as its parent."""

    def __init__(self, name: str, args: list[str], *, port: int, log_path: Path | None,
                 env: dict[str, str] | None = None, host: str = "127.0.0.1", module: str = "shared.cli",
                 catalogue: Path | None = None, inherit_env: bool = True, command: bool = False,
                 death_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.args = ["--catalogue", str(catalogue), *args] if catalogue is not None else args
        self.module = module
        self.port = port
        self.host = host
        self.log_path = log_path
        self.env = env or {}
        # False: the child sees `env` only (a runner passes its children an allow-list).
        self.inherit_env = inherit_env
        # True: `args` is a whole command line (a program of its own), not an `arena` command.
        self.command = command
        # Sent to the child by the kernel if this process dies (SIGTERM: an arena child drains).
        self.death_signal = death_signal
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "ChildProcess":
        """Start it; its output goes to `log_path`, or to this process's own output if None."""
        env = {**(os.environ if self.inherit_env else {}), "PYTHONUNBUFFERED": "1", **self.env}
        argv = list(self.args) if self.command else [sys.executable, "-m", self.module, *self.args]
        # From a checkout, run there (so `-m` finds its packages); installed, where we are.
        options = dict(cwd=checkout_root(), env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                       preexec_fn=functools.partial(_die_with_parent, self.death_signal))
        if self.log_path is None:
            self.process = subprocess.Popen(argv, **options)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, **options)
        return self

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str = "/health", timeout: float = 180.0,
                   abort: Callable[[], str | None] = lambda: None, interval: float = 0.2) -> "ChildProcess":
        """Wait for `path` to answer 200, asking every `interval` seconds; `abort` may return a
        reason to give up early."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if reason := abort():
                    raise RuntimeError(f"{self.name}: stopped by {reason} while starting")
                if not self.running:
                    code = self.process.returncode if self.process else None
                    raise RuntimeError(f"{self.name} exited with {code}:\n{self.log_tail()}")
                try:
                    if client.get(self.url + path).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(interval)
        raise TimeoutError(f"{self.name} not ready at {self.url}{path} after {timeout:.0f}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.running:
            self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a model service drains), then SIGKILL the whole group if it lingers."""
        if self.process is None:
            return None
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
        return self.process.wait(timeout=10)
