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
from scripts.github_api import GitHubClient, GitHubError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
    run_id: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)


class SuccessorLauncher(Protocol):
    def launch(self, request: SuccessorRequest) -> LaunchedSuccessor: ...

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        """Why the successor is known to have failed, or None while it may still come up."""


class GitHubDispatcher:
    def __init__(self, client: GitHubClient, workflow: str, ref: str) -> None:
        self.client = client
        self.workflow = workflow
        self.ref = ref

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
        result = self.client.dispatch_workflow(self.workflow, self.ref, self.inputs(request))
        run_id = result.run_id
        url = result.html_url
        if run_id is None:
            # An older API answered 204: find the run by its exact labels instead.
            for run in self.client.find_runs(self.workflow, model=request.model, instance=request.instance):
                if run.labels and run.labels.instance_id == request.instance_id:
                    run_id, url = run.id, run.html_url
                    break
        title = RunLabels(request.model, request.instance, request.instance_id).title()
        return LaunchedSuccessor(f"workflow run {url or '(not listed yet)'} '{title}'", run_id=run_id)

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        if launched.run_id is None:
            return None
        try:
            run = self.client.get_run(launched.run_id)
        except GitHubError:
            return None
        if run.status == "completed":
            return f"run {run.html_url} ended ({run.conclusion}) before its instance was ready"
        return None


class LocalProcessLauncher:
    """Starts the successor as `python -m shared.cli runner ...` on this machine."""

    def __init__(self, *, port_picker, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self._port_picker = port_picker
        self._extra_args = list(extra_args or [])
        self._env = dict(env or {})
        self._log_dir = log_dir or PROJECT_ROOT / "build" / "runner-logs"
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
                self.command(request, port), cwd=PROJECT_ROOT, env={**os.environ, **self._env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        launched = LaunchedSuccessor(f"local process {process.pid} on port {port} (log {log_path})",
                                     process=process)
        self.launched.append(launched)
        return launched

    def failed(self, launched: LaunchedSuccessor) -> str | None:
        if launched.process is not None and launched.process.poll() is not None:
            return f"local successor exited with {launched.process.returncode} before it was ready"
        return None
