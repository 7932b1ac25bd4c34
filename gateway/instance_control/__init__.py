"""Starting and stopping model instances at runtime, in the local fleet and on GitHub Actions.

`attach_instance_control(app)` builds the fleet backend from `InstanceControlSettings` (the local
supervisor's control channel, else GitHub Actions, else none), puts an `InstanceController` on
`app.state.instance_control`, watches the fleet in the background and adds the routes. Another
package may replace `controller.spec_for` / `controller.model_keys` (a runtime catalogue overlay)
and call `controller.rolling_restart(key, coalesce=True)` when a model's settings change.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from gateway.instance_control.backends import (
    ActionsFleet,
    InstanceBackend,
    LocalSupervisor,
)
from gateway.instance_control.controller import InstanceController
from gateway.instance_control.settings import NOT_CONFIGURED, InstanceControlSettings

__all__ = ["InstanceControlSettings", "attach_instance_control", "make_backend"]


def make_backend(settings: InstanceControlSettings, *,
                 github_transport: httpx.BaseTransport | None = None) -> InstanceBackend | None:
    kind = settings.backend_kind
    if kind == "local":
        assert settings.control_url and settings.control_token
        return LocalSupervisor(settings.control_url, settings.control_token)
    if kind == "actions":
        from scripts.github_api import GitHubClient

        assert settings.github_repository and settings.github_token
        client = GitHubClient(settings.github_repository, settings.github_token,
                              token_name="ARENA_FLEETCTL_GITHUB_TOKEN", api_url=settings.github_api_url,
                              transport=github_transport, attempts=2, max_wait=5.0, timeout=15.0)
        return ActionsFleet(client, workflow=settings.fleet_workflow, ref=settings.github_ref)
    return None


def fleet_description(settings: InstanceControlSettings) -> dict[str, object]:
    """What the page says about the fleet (never the token)."""
    kind = settings.backend_kind
    return {"kind": kind, "message": None if kind else NOT_CONFIGURED,
            "repository": settings.github_repository if kind == "actions" else None,
            "workflow": settings.fleet_workflow if kind == "actions" else None}


def attach_instance_control(app: FastAPI, settings: InstanceControlSettings | None = None) -> InstanceController:
    from gateway.instance_control.routes import admin, v1
    from gateway.store.periodic import Periodic

    settings = settings or InstanceControlSettings()
    controller = InstanceController(app.state.instances, make_backend(settings), not_configured=NOT_CONFIGURED,
                                    ready_timeout=settings.ready_timeout, drain_timeout=settings.drain_timeout)
    app.state.instance_control = controller
    app.state.instance_control_fleet = fleet_description(settings)
    watch = Periodic("instance control watch", settings.poll_interval, controller.watch)

    async def start() -> None:
        await watch.run_once()
        watch.start()

    async def stop() -> None:
        await watch.stop()
        await controller.close()

    app.state.on_startup.append(start)
    app.state.on_shutdown.append(stop)
    app.include_router(admin)
    app.include_router(v1)
    return controller
