"""The gateway's app factory.

Everything stateful lives in plain classes on `app.state`:

- `instances` (`InstanceRegistry`): every instance and its state; `ready_models()`.
- `monitor` (`HealthMonitor`): background probes, the only thing that changes states.
- `database` (`gateway.store.Database`): the store (SQLite file, or PostgreSQL shared by replicas).
- `registrations` (`RegistrationService`): self-registered instances, kept in the store.
- `upstream` (`UpstreamProxy`): picks an instance and relays; `stream_chat(body)` for the arena.
- `api_keys` (`ApiKeyStore`), `key_cache` (`KeyCache`), `key_guard` (`ApiKeyGuard`), `metrics` (`GatewayMetrics`),
  `fleet_status` (`FleetStatus`), `settings`, `catalogue`.
- `instance_control` (`gateway.instance_control.InstanceController`): starts and drains instances at runtime.

Features that need startup or shutdown work can append coroutines to `app.state.on_startup`
and `app.state.on_shutdown`; the lifespan awaits them after (before) the gateway's own. Those
that read the store before the gateway uses it (the catalogue overlay) append to
`app.state.on_store_ready`, awaited right after the migrations.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from gateway.arena.clients import ClientIdentifier
from gateway.arena.votes import VoteStore
from gateway.auto_routing import AutoRouter
from gateway.auth import ApiKeyGuard, AuthFailures
from gateway.balancing import make_balancer
from gateway.fast_path import CompletionRouter
from gateway.response_cache import ResponseCache
from gateway.fleet_status import FleetStatus
from gateway.health_monitor import HealthMonitor, HealthPolicy
from gateway.instances import InstanceRegistry
from gateway.keys import ApiKeyStore, KeyCache, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.registration import RegistrationService, RegistrationStore, UrlPolicy
from gateway.routes import admin_api, instances_api, openai_api, status_api
from gateway.security_headers import SecurityHeaders
from gateway.settings import GatewaySettings
from gateway.static_instances import static_base_domain, static_instances
from gateway.store import Database, DatabaseUnavailable
from gateway.store.legacy import import_legacy_votes
from gateway.store.periodic import Periodic
from gateway.upstream import ProxyPolicy, UpstreamProxy
from gateway.errors import GATEWAY_ERRORS
from shared.catalogue import Catalogue
from shared.api_docs import attach_api_docs
from shared.body_limit import BodyLimit
from shared.errors import install_error_handlers
from shared.openapi import publish_openapi
from shared.telemetry import Telemetry

log = logging.getLogger("gateway")


def create_app(catalogue: Catalogue, settings: GatewaySettings, telemetry: Telemetry | None = None) -> FastAPI:
    """The gateway of `catalogue`'s fleet; `settings` fields left unset take the fleet's values.
    `telemetry` (`shared.telemetry`): trace each request and each attempt towards an instance."""
    settings = settings.with_fleet_defaults(catalogue.fleet)

    instances = InstanceRegistry(catalogue)
    for instance in static_instances(catalogue, use_catalogue=settings.catalogue_instances,
                                     urls=settings.instance_urls):
        instances.add(instance)
    db = Database(settings.store_url)
    registrations = RegistrationService(
        RegistrationStore(db), instances, default_ttl=settings.default_ttl, max_ttl=settings.max_ttl,
        url_policy=UrlPolicy(settings.registration_host_patterns(static_base_domain(catalogue))),
        max_per_model=settings.max_registrations_per_model, sync_interval=settings.registration_sync)
    monitor = HealthMonitor(instances, HealthPolicy(
        interval=settings.health_interval, timeout=settings.health_timeout,
        recovery_probes=settings.recovery_probes, flap_threshold=settings.flap_threshold,
        flap_window=settings.flap_window, flap_cooldown=settings.flap_cooldown,
        gone_retention=settings.gone_retention), instance_secret=settings.instance_secret)
    balancer = make_balancer(settings.balancer)
    metrics = GatewayMetrics(instances, balancer)
    upstream = UpstreamProxy(instances, balancer, monitor, metrics,
                             AutoRouter(catalogue.routing), ProxyPolicy(
                                 connect_timeout=settings.connect_timeout, request_timeout=settings.request_timeout,
                                 attempts=settings.retry_attempts, backoff=settings.retry_backoff,
                                 backoff_max=settings.retry_backoff_max, max_response_bytes=settings.max_response_bytes,
                                 max_connections=settings.max_connections),
                             instance_secret=settings.instance_secret, telemetry=telemetry)
    upstream.responses = ResponseCache(catalogue.fleet.response_cache_entries, catalogue.fleet.response_cache_ttl)
    api_keys = ApiKeyStore(db)
    key_cache = KeyCache(api_keys)
    limiter = RateLimiter(db)
    votes = VoteStore(db)

    async def prune() -> None:
        pruned = await votes.prune_battles(time.time() - settings.unvoted_battle_ttl)
        await limiter.prune()
        for hook in app.state.on_prune:  # the store's other prunes (mode transcripts, ...)
            await hook()
        if pruned:
            log.info("pruned %d unvoted battles older than %ds", pruned, settings.unvoted_battle_ttl)

    background = [Periodic("API key refresh", settings.key_refresh, key_cache.refresh),
                  Periodic("pruning", settings.prune_interval, prune)]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.upgrade()
        for hook in app.state.on_store_ready:
            await hook()
        if settings.database_url is None and settings.db_path is not None:
            await import_legacy_votes(db, settings.db_path.parent)
        await key_cache.refresh()
        restored = await registrations.restore()
        log.info("gateway: %d static instances, %d registrations restored, balancer %s, keys %s, store %s",
                 len([i for i in instances.all() if i.source == "static"]), restored, settings.balancer,
                 "required" if settings.require_api_key else "off", db.display_url)
        await upstream.start()
        await monitor.start()
        await registrations.start()
        for task in background:
            task.start()
        await background[1].run_once()
        for hook in app.state.on_startup:
            await hook()
        try:
            yield
        finally:
            for hook in app.state.on_shutdown:
                await hook()
            for task in background:
                await task.stop()
            await registrations.stop()
            await monitor.stop()
            await upstream.stop()
            await db.dispose()
            if telemetry is not None:
                telemetry.shutdown()

    app = FastAPI(title="Serverless LLM Arena gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.catalogue = catalogue
    app.state.instances = instances
    app.state.monitor = monitor
    app.state.registrations = registrations
    app.state.metrics = metrics
    app.state.upstream = upstream
    app.state.database = db
    app.state.api_keys = api_keys
    app.state.key_cache = key_cache
    app.state.key_guard = ApiKeyGuard(key_cache, limiter, required=settings.require_api_key,
                                      default_rpm=settings.default_rpm, admin_key=settings.admin_key,
                                      failures=AuthFailures(limiter, ClientIdentifier(catalogue.arena.trusted_proxies),
                                                            settings.auth_failures_per_minute))
    app.state.fleet_status = FleetStatus(instances)
    app.state.on_store_ready = []  # after the store's migrations, before registrations are restored
    app.state.on_startup = []
    app.state.on_shutdown = []
    app.state.on_prune = []

    install_error_handlers(app, GATEWAY_ERRORS)
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    publish_openapi(app)
    attach_api_docs(app)  # /docs and /swagger-ui, with Swagger UI served by the gateway itself
    # Middleware added last runs first: the body limit, then CORS (when on), then the
    # completion endpoints' router (gateway.fast_path), then FastAPI's routing.
    app.add_middleware(CompletionRouter, state=app.state)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["X-Arena-Model", "X-Arena-Instance", "Retry-After"])
    from gateway.arena.routes import CONTENT_SECURITY_POLICY
    app.add_middleware(SecurityHeaders, content_security_policy=CONTENT_SECURITY_POLICY)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in (openai_api.router, instances_api.router, status_api.router, admin_api.router):
        app.include_router(router)

    from gateway.arena import attach_arena
    attach_arena(app)
    from gateway.modes import attach_modes
    attach_modes(app)
    from gateway.admin import attach_admin
    attach_admin(app)
    from gateway.instance_control import attach_instance_control
    attach_instance_control(app)
    if telemetry is not None:
        telemetry.instrument_app(app)
    return app


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    assert isinstance(exc, DatabaseUnavailable)
    return exc.api_error().response()
