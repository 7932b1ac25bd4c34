"""Starting and stopping model instances at runtime, in the local fleet and on GitHub Actions.

`attach_instance_control(app)` builds the fleet backend from `InstanceControlSettings` (the local
supervisor's control channel, else GitHub Actions, else none), puts an `InstanceController` on
`app.state.instance_control`, watches the fleet in the background and adds the routes. With the
admin side's runtime catalogue overlay (`app.state.catalogue_overlay`), `plug_overlay` makes it
the source of every spec (models added at runtime can be started) and applies a settings change
by a rolling restart of that model's instances.
"""

from __future__ import annotations

import httpx
from typing import Any, Awaitable, Callable

from fastapi import FastAPI

from gateway.instance_control.backends import (
    ActionsFleet,
    InstanceBackend,
    LocalSupervisor,
)
from gateway.instance_control.controller import InstanceController
from gateway.instance_control.settings import NOT_CONFIGURED, InstanceControlSettings

__all__ = ["attach_instance_control", "make_backend", "plug_overlay", "InstanceControlSettings"]

Audit = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]


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


def plug_overlay(controller: InstanceController, overlay: Any, audit: Audit | None = None) -> None:
    """Specs from the overlay (`CatalogueOverlay`); its settings changes restart the model's
    instances, one at a time (only when there is a fleet to restart them in: otherwise the
    overlay keeps saying a restart is needed)."""
    from gateway.admin.catalogue_overlay import UnknownModel

    def spec_for(key: str):
        try:
            return overlay.model_spec(key)
        except UnknownModel:
            raise KeyError(key) from None

    controller.spec_for = spec_for
    controller.model_keys = lambda: list(overlay.effective_catalogue().models)
    controller.fleet_catalogue = overlay.base
    if controller.backend is None or controller.backend.kind != "local":
        # Runners on Actions read the repository's catalogue: restarting them would bring the old
        # settings back, so a change there stays "restart needed" (commit the exported overlay).
        return

    async def restart_on_settings_change(key: str) -> None:
        if not controller.live(key):
            return  # nothing runs it: the next start takes the new settings
        restart = controller.rolling_restart(key, reason="settings changed", coalesce=True)
        if audit is not None:
            await audit("settings", "instance.rolling_restart", key, {"reason": restart.reason})

    overlay.on_settings_changed.append(restart_on_settings_change)


def attach_instance_control(app: FastAPI, settings: InstanceControlSettings | None = None) -> InstanceController:
    from gateway.instance_control.routes import admin, v1
    from gateway.store.periodic import Periodic

    settings = settings or InstanceControlSettings()
    controller = InstanceController(app.state.instances, make_backend(settings), not_configured=NOT_CONFIGURED,
                                    ready_timeout=settings.ready_timeout, drain_timeout=settings.drain_timeout)
    app.state.instance_control = controller
    overlay = getattr(app.state, "catalogue_overlay", None)
    if overlay is not None:
        admin_side = getattr(app.state, "admin", None)
        plug_overlay(controller, overlay, admin_side.audit.record if admin_side is not None else None)
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
