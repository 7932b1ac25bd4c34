"""`arena gateway`: run the gateway (one uvicorn worker; run several behind a load balancer)."""

from __future__ import annotations

import argparse

from shared.catalogue import Catalogue


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="default: catalogue fleet.gateway_host")
    parser.add_argument("--port", type=int, help="default: catalogue fleet.gateway_port")
    parser.add_argument("--log-format", choices=["json", "pretty"], help="default: ARENA_GATEWAY_LOG_FORMAT or pretty")
    parser.add_argument("--log-level", help="default: info")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    import asyncio
    import sys

    import uvicorn
    from pydantic import ValidationError

    from gateway.app import create_app
    from gateway.drain import DrainGuard, DrainingServer
    from gateway.logs import configure_logging
    from gateway.settings import GatewaySettings
    from gateway.store.cli import StartupError, open_checked
    from shared.telemetry import Telemetry
    from shared.tls import uvicorn_tls

    overrides = {name: value for name, value in
                 (("host", args.host), ("port", args.port), ("log_format", args.log_format),
                  ("log_level", args.log_level)) if value is not None}
    try:
        settings = GatewaySettings.for_catalogue(catalogue, **overrides)
    except ValidationError as exc:  # one line per bad setting, no traceback
        for error in exc.errors():
            message = str(error["msg"])
            if not message.startswith("Value error, "):
                message = f"{'.'.join(map(str, error['loc']))}: {message}"
            print(f"arena gateway: {message.removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    telemetry = Telemetry.from_environ("arena-gateway")  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    configure_logging(settings.log_format, settings.log_level,
                      record_filter=telemetry.log_filter() if telemetry else None)
    try:  # fail fast, in one line, on a database that cannot be used (the app migrates it again)
        asyncio.run(_check_store(open_checked, settings.store_url))
    except StartupError as exc:
        print(f"arena gateway: {exc}", file=sys.stderr)
        return 2
    try:
        tls = uvicorn_tls(settings.tls_cert, settings.tls_key)
    except ValueError as exc:
        print(f"arena gateway: {exc}", file=sys.stderr)
        return 2
    app = create_app(catalogue, settings, telemetry)
    # SIGTERM drains (gateway.drain): in-flight streams finish, new requests get a retryable 503.
    guard = DrainGuard(app)
    config = uvicorn.Config(guard, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            log_level=settings.log_level.lower(), timeout_graceful_shutdown=10,
                            **tls)  # uvloop, httptools
    DrainingServer(config, guard, timeout=settings.drain_timeout, linger=settings.drain_linger).run()
    return 0


async def _check_store(open_checked, url: str) -> None:
    db = await open_checked(url)
    await db.dispose()
