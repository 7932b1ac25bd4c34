"""Where instances are started and stopped: one class per fleet, behind `InstanceBackend`.

- `LocalSupervisor`: the local fleet's supervisor (`arena up`), through its control channel
  (`shared.fleet_control`): it starts a model process on a free port with a share of the cores,
  or drains one (SIGTERM); the gateway learns the new instance's URL from its answer.
- `ActionsFleet`: the fleet on GitHub Actions, through the project's GitHub client
  (`scripts.github_api`): a start dispatches the model's runner workflow (`fleet.yml`, one
  instance); a stop cancels the run that carries the instance's id in its title (the runner
  drains and deregisters); an instance of a fleet-up run (one run for several instance labels)
  is asked to drain at its runner's next heartbeat instead, so its siblings serve on; the
  instance appears when its runner registers with the gateway.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.instance_control.errors import (
    FleetRefused,
    RunNotFound,
    SupervisorBadAnswer,
    SupervisorUnavailable,
    github_failure,
)
from gateway.instance_control.overlay_publication import OverlayPublisher
from gateway.instances import Instance
from scripts.fleet_config import MAX_INSTANCES
from scripts.fleet_labels import ALL_INSTANCES, new_instance_id
from scripts.github_api import GitHubClient, GitHubError, WorkflowRun
from shared.catalogue import ModelSpec
from shared.errors import ApiError

# A supervisor's error code passed on to the client as it is (else `fleet_unavailable`).
SUPERVISOR_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Started:
    """What a start made: an instance the gateway can route to at once (local), or a run that
    will register one later (Actions)."""

    instance_id: str | None
    url: str | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetProcess:
    """An instance as its fleet sees it (a local process, or an Actions run)."""

    instance_id: str
    model: str
    url: str | None
    state: str                    # local: running | stopping | exited; Actions: the run's status
    detail: dict[str, Any] = field(default_factory=dict)


class InstanceBackend(Protocol):
    kind: str

    async def start(self, model: str, spec: ModelSpec | None) -> Started:
        """Start one instance of `model`; `spec` is sent only when it differs from the fleet's file."""
        ...

    async def stop(self, instance: Instance) -> dict[str, Any]: ...

    async def processes(self) -> list[FleetProcess] | None:
        """What the fleet runs now, or None when it cannot tell cheaply (Actions)."""
        ...

    async def close(self) -> None: ...


class _SupervisorProcess(BaseModel):
    """One process as the supervisor's control API describes it (`shared.fleet_control`)."""

    model_config = ConfigDict(extra="ignore")
    instance_id: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=200)
    url: str | None = Field(None, pattern=r"^https?://[^\s]{1,300}$")
    state: str = Field(max_length=40)
    threads: int | None = None
    cpus: list[int] | None = None
    pid: int | None = None


class _SupervisorList(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: list[_SupervisorProcess] = Field(max_length=10_000)


class _SupervisorStopped(BaseModel):
    model_config = ConfigDict(extra="ignore")
    state: str | None = Field(None, max_length=40)


class LocalSupervisor:
    kind = "local"

    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), transport=transport, timeout=10.0,
                                       headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SupervisorUnavailable(f"The local fleet's supervisor did not answer ({type(exc).__name__}); "
                                        "is `arena up` still running?") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            message = error.get("message") if isinstance(error, dict) else None
            if not isinstance(message, str):
                raise SupervisorBadAnswer(f"The local fleet's supervisor answered {method} {path} with HTTP "
                                          f"{response.status_code} and no error of its control API's shape.")
            if 500 <= response.status_code < 600:  # the fleet cannot now (no free port, stopping): its status
                code = error.get("code")
                raise ApiError(response.status_code, f"The local fleet could not: {message[:500]}",
                               code=code if isinstance(code, str) and SUPERVISOR_CODE.match(code) else "fleet_unavailable")
            raise FleetRefused(f"The local fleet refused: {message[:500]}")
        return body

    @staticmethod
    def _read(shape: type[BaseModel], body: Any, what: str) -> Any:
        """The supervisor's answer in its control API's shape, or a 502 that says it was not."""
        try:
            return shape.model_validate(body)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "the body"
            raise SupervisorBadAnswer(f"The local fleet's supervisor gave a garbled answer to {what} "
                                      f"({where}: {problem['msg']}); is `arena up` the same version as "
                                      "the gateway?") from None

    async def start(self, model: str, spec: ModelSpec | None) -> Started:
        payload: dict[str, Any] = {"model": model}
        if spec is not None:
            payload["spec"] = {**spec.model_dump(mode="json", exclude={"key"}), "source": str(spec.source)}
        started = self._read(_SupervisorProcess, await self._call("POST", "/instances", json=payload),
                             f"a start of {model}")
        if started.url is None:
            raise SupervisorBadAnswer(f"The local fleet's supervisor started {model} but gave no URL for it.")
        return Started(started.instance_id, started.url,
                       {"threads": started.threads, "cpus": started.cpus, "pid": started.pid})

    async def stop(self, instance: Instance) -> dict[str, Any]:
        body = await self._call("DELETE", f"/instances/{instance.instance_id}")
        return {"state": self._read(_SupervisorStopped, body, f"a stop of {instance.instance_id}").state}

    async def processes(self) -> list[FleetProcess]:
        listed = self._read(_SupervisorList, await self._call("GET", "/instances"), "the list of instances")
        return [FleetProcess(p.instance_id, p.model, p.url, p.state, {"threads": p.threads, "cpus": p.cpus})
                for p in listed.data]

    async def close(self) -> None:
        await self._http.aclose()


class ActionsFleet:
    kind = "actions"

    def __init__(self, client: GitHubClient, *, workflow: str = "fleet.yml", ref: str | None = None,
                 publisher: OverlayPublisher | None = None,
                 request_drain: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.client = client
        self.workflow = workflow
        self.ref = ref
        # The runtime overlay's publication to the repository (`plug_overlay` sets it): a run reads
        # the overlay file of its checkout, so it is published before every dispatch.
        self.publisher = publisher
        # Asks one registered instance to drain at its next heartbeat (the gateway's
        # `RegistrationService.request_drain`): how one instance of a fleet-up run stops alone.
        self.request_drain = request_drain

    async def _github(self, call, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except GitHubError as exc:
            raise github_failure(exc) from exc

    async def start(self, model: str, spec: ModelSpec | None) -> Started:
        """Dispatch one instance with a free instance label (the workflow serves labels 1-3) and an
        id of our choosing in its title, so that a stop finds exactly its run."""
        runs = await self.active_runs(model)
        used = {run.labels.instance for run in runs if run.labels}
        if ALL_INSTANCES in used:
            used.add("1")  # a fleet-up run: at least its first label
        label = next((str(n) for n in range(1, MAX_INSTANCES + 1) if str(n) not in used), None)
        if label is None:
            raise FleetRefused(f"{model} already has runs for every instance label (1-{MAX_INSTANCES}) on Actions.")
        publication = await self.publisher.publish(reason=f"before starting {model}") if self.publisher else None
        ref = publication.branch if publication else self.ref or await self._github(self.client.default_branch)
        instance_id = new_instance_id(model, label)
        result = await self._github(self.client.dispatch_workflow, self.workflow, ref,
                                    {"model": model, "instances": "1", "instance": label, "instance_id": instance_id})
        detail: dict[str, Any] = {"run_id": result.run_id, "html_url": result.html_url, "ref": ref,
                                  "instance_label": label, "expected_instance_id": instance_id}
        if publication is not None:
            detail["catalogue_commit"] = publication.commit
        elif spec is not None:
            detail["note"] = ("the runner reads the catalogue of the repository: without the overlay published "
                              "there, it starts with the repository's settings")
        return Started(None, None, detail)

    async def active_runs(self, model: str) -> list[WorkflowRun]:
        return await self._github(lambda: self.client.find_runs(self.workflow, model=model, max_pages=2))

    async def stop(self, instance: Instance) -> dict[str, Any]:
        """Cancel the run that carries the instance's id; an instance of a fleet-up run (one run,
        a job per instance label, none carrying an id) is asked to drain instead: its runner
        hears it at its next heartbeat, drains, and its job ends without a successor while the
        run's other jobs serve on."""
        runs = await self.active_runs(instance.model)
        matching = [run for run in runs if run.labels and run.labels.instance_id == instance.instance_id]
        fleet_up = [run for run in runs if run.labels and not run.labels.instance_id]
        if not matching and fleet_up and instance.source == "registered" and self.request_drain is not None:
            if await self.request_drain(instance.instance_id):
                return {"drain_requested": True, "fleet_up_runs": [run.html_url or run.id for run in fleet_up]}
        if not matching and fleet_up:
            raise RunNotFound(f"{instance.instance_id} runs in a fleet-up run that serves several instances, and "
                              "it is not registered here to be asked to drain; unload "
                              f"{instance.model} (or `make fleet-down {instance.model}`) to stop them all.")
        if not matching:
            raise RunNotFound(f"No active workflow run of {instance.model} carries the instance id "
                              f"{instance.instance_id!r}: it was not started by this fleet's workflow.")
        for run in matching:
            await self._github(self.client.cancel_run, run.id)
        return {"cancelled_runs": [run.html_url or run.id for run in matching]}

    async def stop_model(self, model: str) -> list[WorkflowRun]:
        """Cancel every active run of the model (each runner drains and deregisters)."""
        runs = await self.active_runs(model)
        for run in runs:
            await self._github(self.client.cancel_run, run.id)
        return runs

    async def processes(self) -> None:
        return None

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

