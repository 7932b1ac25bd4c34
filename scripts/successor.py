"""How a runner starts the next link of its chain: one interface, one implementation per place.

- `GitHubDispatcher` (production): `workflow_dispatch` of the fleet dispatcher workflow, whose
  run is titled with the successor's exact labels.
- `LocalProcessLauncher` (the handoff drill, or a machine without Actions): the same
  `arena runner` command as a child process on a free port of this machine.

The successor's instance id is chosen by its predecessor and passed along, so the predecessor
can ask the gateway about exactly that id, and never confuses it with its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from scripts.fleet_labels import RunLabels
from scripts.github_api import GitHubClient, GitHubError, RunDispatch
from shared import paths



@dataclass(frozen=True)
class SuccessorRequest:
    model: str
    instance: str
    instance_id: str
    predecessor_id: str
    duration_hours: float
    auto_restart: bool = True


@dataclass
class LaunchedSuccessor:
    description: str                 # for the log: a run URL, a pid
    dispatch: RunDispatch | None = field(default=None, repr=False)
    process: subprocess.Popen | None = field(default=None, repr=False)


class SuccessorLauncher(Protocol):
    # How often `failed` may be asked: each question costs the launcher's backend something
    # (a GitHub request counts against the repository's shared hourly budget).
    poll_seconds: float

    def launch(self, request: SuccessorRequest) -> LaunchedSuccessor: ...

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        """Why the successor is known to have failed, or None while it may still come up."""


class GitHubDispatcher:
    """Dispatches the successor's run once (`RunDispatch`) and checks on it at most once a
    `poll_seconds`: GITHUB_TOKEN allows 1,000 requests an hour per repository, shared by every
    job, and a fleet's runners hand off at about the same time."""

    def __init__(self, client: GitHubClient, workflow: str, ref: str, *, poll_seconds: float = 60.0,
                 lookup_seconds: float = 300.0) -> None:
        self.client = client
        self.workflow = workflow
        self.ref = ref
        self.poll_seconds = poll_seconds
        self.lookup_seconds = lookup_seconds

    def inputs(self, request: SuccessorRequest) -> dict[str, str]:
        return {
            "model": request.model,
            "instances": "1",
            "instance": request.instance,
            "instance_id": request.instance_id,
            "predecessor_id": request.predecessor_id,
            "duration_hours": f"{request.duration_hours:g}",
            "auto_restart": "true" if request.auto_restart else "false",
        }

    def launch(self, request: SuccessorRequest) -> LaunchedSuccessor:
        dispatch = RunDispatch(self.client, self.workflow, self.ref, self.inputs(request),
                               RunLabels(request.model, request.instance, request.instance_id),
                               lookup_seconds=self.lookup_seconds)
        dispatch.dispatch()
        return LaunchedSuccessor(dispatch.describe(), dispatch=dispatch)

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        dispatch = launched.dispatch
        if dispatch is None:
            return None
        try:
            state = dispatch.check()
        except GitHubError:
            return None         # GitHub is busy or rate limited: ask again next poll
        if state == RunDispatch.ENDED and dispatch.run is not None:
            return f"run {dispatch.run.html_url} ended ({dispatch.run.conclusion}) before its instance was ready"
        if state == RunDispatch.LOST:
            return (f"no run titled '{dispatch.labels.title()}' appeared within "
                    f"{dispatch.lookup_seconds:.0f}s of the dispatch")
        return None


class LocalProcessLauncher:
    """Starts the successor as `python -m shared.cli runner ...` on this machine."""

    poll_seconds = 1.0

    def __init__(self, *, port_picker, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self._port_picker = port_picker
        self._extra_args = list(extra_args or [])
        self._env = dict(env or {})
        self._log_dir = log_dir or paths.log_dir("runner")
        self.launched: list[LaunchedSuccessor] = []

    def command(self, request: SuccessorRequest, port: int) -> list[str]:
        return [sys.executable, "-m", "shared.cli", "runner", request.model,
                "--instance", request.instance, "--instance-id", request.instance_id,
                "--predecessor-id", request.predecessor_id,
                "--duration-hours", f"{request.duration_hours:g}",
                "--port", str(port), "--successor", "local",
                *([] if request.auto_restart else ["--no-auto-restart"]), *self._extra_args]

    def launch(self, request: SuccessorRequest) -> LaunchedSuccessor:
        port = self._port_picker()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / f"runner-{request.instance_id}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                self.command(request, port), cwd=paths.checkout_root(), env={**os.environ, **self._env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        launched = LaunchedSuccessor(f"local process {process.pid} on port {port} (log {log_path})",
                                     process=process)
        self.launched.append(launched)
        return launched

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        if launched.process is not None and launched.process.poll() is not None:
            return f"local successor exited with {launched.process.returncode} before it was ready"
        return None
