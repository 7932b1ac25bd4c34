"""Starting and stopping model instances at runtime, in the local fleet and on GitHub Actions.

`attach_instance_control(app)` builds the fleet backend from `InstanceControlSettings` (the local
supervisor's control channel, else GitHub Actions, else none), puts an `InstanceController` on
`app.state.instance_control`, watches the fleet in the background and adds the routes. With the
admin side's runtime catalogue overlay (`app.state.catalogue_overlay`), `plug_overlay` makes it
the source of every spec (models added at runtime can be started) and applies a settings change
by a rolling restart of that model's instances; on Actions the overlay is first published to the
fleet's repository (`overlay_publication`), where the runners read it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import httpx

from fastapi import FastAPI

from gateway.instance_control.backends import (
    ActionsFleet,
    InstanceBackend,
    LocalSupervisor,
)
from gateway.instance_control.controller import InstanceController
from gateway.instance_control.overlay_publication import OVERLAY_PATH, OverlayPublisher
from gateway.instance_control.settings import NOT_CONFIGURED, InstanceControlSettings
from shared.catalogue import CatalogueError, read_overlay

log = logging.getLogger("gateway.instance_control")

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
            "workflow": settings.fleet_workflow if kind == "actions" else None,
            "catalogue_overlay_path": OVERLAY_PATH if kind == "actions" else None}


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
    backend = controller.backend
    if backend is None:
        return  # a change waits for a restart of the model ("restart needed")
    publisher = None
    if isinstance(backend, ActionsFleet):
        # Runners on Actions read the overlay file of their checkout: it is published to the
        # branch the runs start from, after each change and before each dispatch.
        publisher = backend.publisher = OverlayPublisher(backend.client, overlay.overlay_yaml, branch=backend.ref)

    async def apply_settings_change(key: str) -> None:
        if publisher is not None:
            try:
                publication = await publisher.publish(reason=f"settings of {key} changed")
            except Exception as exc:  # the restart's own dispatches publish again, or fail saying why
                log.warning("publishing the catalogue overlay after a change of %s failed: %s", key, exc)
                if audit is not None:
                    await audit("settings", "catalogue.publish_failed", key, {"error": str(exc)[:300]})
            else:
                if audit is not None and publication.commit:
                    await audit("settings", "catalogue.publish", key, publication.audit_detail())
        if not controller.live(key):
            return  # nothing runs it: the next start takes the new settings
        restart = controller.rolling_restart(key, reason="settings changed", coalesce=True)
        if audit is not None:
            await audit("settings", "instance.rolling_restart", key, {"reason": restart.reason})

    overlay.on_settings_changed.append(apply_settings_change)


async def import_published_overlay(overlay: Any, publisher: OverlayPublisher | None, audit: Audit | None) -> None:
    """A fresh store (its overlay empty) takes the overlay published before it was lost: the
    checkout's overlay file (ARENA_CATALOGUE_OVERLAY), else the repository's copy (Actions), so
    the runners started from it are known again. Never over a store that holds an overlay; a file
    that cannot be read is logged, not fatal."""
    if not await overlay.store_is_empty():
        return
    found = None
    if overlay.published_file is not None:
        try:
            found = (await asyncio.to_thread(read_overlay, overlay.published_file), str(overlay.published_file))
        except CatalogueError as exc:
            log.warning("catalogue overlay: %s", exc)
        if found is not None and isinstance(found[0], dict) and not found[0].get("models"):
            found = None  # the committed empty overlay: the repository's copy may hold more
    if found is None and publisher is not None:
        try:
            found = await publisher.read()
        except Exception as exc:  # GitHub down or refusing: the gateway starts with the catalogue file
            log.warning("catalogue overlay: reading the published %s failed: %s", OVERLAY_PATH, exc)
    if found is None or found[0] is None:
        return
    data, source = found
    try:
        imported = await overlay.import_published(data, source=source, actor="startup")
    except CatalogueError as exc:
        log.warning("catalogue overlay: %s", exc)
        return
    if imported:
        log.info("catalogue overlay: imported %s from %s into a fresh store", ", ".join(imported), source)
        if audit is not None:
            await audit("startup", "catalogue.import", source, {"models": imported})


def attach_instance_control(app: FastAPI, settings: InstanceControlSettings | None = None) -> InstanceController:
    from gateway.instance_control.routes import admin, v1
    from gateway.store.periodic import Periodic

    settings = settings or InstanceControlSettings()
    controller = InstanceController(app.state.instances, make_backend(settings), not_configured=NOT_CONFIGURED,
                                    ready_timeout=settings.ready_timeout, drain_timeout=settings.drain_timeout)
    app.state.instance_control = controller
    registrations = getattr(app.state, "registrations", None)
    if isinstance(controller.backend, ActionsFleet) and registrations is not None:
        controller.backend.request_drain = registrations.request_drain
    overlay = getattr(app.state, "catalogue_overlay", None)
    if overlay is not None:
        admin_side = getattr(app.state, "admin", None)
        audit = admin_side.audit.record if admin_side is not None else None
        plug_overlay(controller, overlay, audit)
        # After the overlay's load, before the registrations are restored (they name its models).
        app.state.on_store_ready.append(lambda: import_published_overlay(
            overlay, getattr(controller.backend, "publisher", None), audit))
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
