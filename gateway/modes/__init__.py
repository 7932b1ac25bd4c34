"""Models working together: discussion, council and roundtable, streamed live.

`attach_modes(app)` adds the modes' pages and `/api/modes/*` to the gateway app. The logic is
in plain classes: one per mode (`Discussion`, `Council`, `Roundtable`), the shared `Session`
(turns, events, transcript), `ModesService` (bounds, clients, running, stopping),
`TranscriptRepository` (storage) and the model calls behind `ChatClient` (`FleetChat`: our
fleet, in-process; `ExternalChat`: any OpenAI-compatible endpoint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from gateway.modes.settings import ModesSettings

__all__ = ["attach_modes"]


def attach_modes(app: FastAPI, settings: "ModesSettings | None" = None) -> None:
    """Attach the modes to `app`; `settings` default to the environment's (ARENA_MODES_*)."""
    from gateway.modes.chat import FleetChat
    from gateway.modes.events import event_schemas
    from gateway.modes.manager import ModesService, external_client
    from gateway.modes.routes import install
    from gateway.modes.settings import ModesSettings
    from gateway.modes.transcripts import TranscriptRepository

    state = app.state
    settings = settings or ModesSettings()
    # A session ends by its time limit, on whichever gateway runs it: a row still running after
    # twice that has no gateway left.
    repository = TranscriptRepository(state.database, retention_days=state.catalogue.arena.transcript_retention_days,
                                      max_running=2 * settings.session_timeout)
    service = ModesService(state.catalogue, settings, FleetChat(state.upstream.stream_chat),
                           state.instances.ready_models, repository, external_client(settings))
    install(app, service)

    state.on_shutdown.append(service.aclose)
    state.on_prune.append(repository.prune)

    # The stream's event types, referenced by POST /api/modes/{mode}, join the document's schemas.
    original = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(event_schemas())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
