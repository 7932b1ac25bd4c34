"""`arena serve MODEL`: run one model instance, draining on SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys

from shared.catalogue import Catalogue, CatalogueError
from shared.logs import configure_logging
from shared.telemetry import Telemetry
from shared.tls import uvicorn_tls
from services.settings import ServiceSettings

log = logging.getLogger("services")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="catalogue key of the model (see `arena models`)")
    parser.add_argument("--host", help="address to listen on (default: the catalogue's service_host)")
    parser.add_argument("--port", type=int, help="port (default: the model's port in the catalogue)")
    parser.add_argument("--parallel", type=int, help="parallel slots decoded together (default: catalogue)")
    parser.add_argument("--n-ctx", type=int, help="context length of each slot, in tokens")
    parser.add_argument("--threads", type=int, help="CPU threads for inference")
    parser.add_argument("--n-batch", type=int, help="tokens decoded per step at most")
    parser.add_argument("--max-queue", type=int, help="requests waiting for a slot before 503s")
    parser.add_argument("--engine", choices=("llama-cpp-python", "llama-server"),
                        help="what decodes (default: the catalogue's engine of the model)")
    parser.add_argument("--instance-id", help="id of this instance (default: host-pid-random)")
    parser.add_argument("--log-level", default=None, help="debug, info, warning, error")
    parser.add_argument("--log-format", choices=["json", "pretty"], help="default: ARENA_SERVICE_LOG_FORMAT or pretty")


def run(args: argparse.Namespace, catalogue: Catalogue) -> int:
    overrides = {name: value for name, value in {
        "model": args.model, "host": args.host, "port": args.port, "parallel": args.parallel,
        "n_ctx": args.n_ctx, "threads": args.threads, "n_batch": args.n_batch, "max_queue": args.max_queue,
        "engine": args.engine, "instance_id": args.instance_id, "log_level": args.log_level,
        "log_format": args.log_format}.items() if value is not None}
    settings = ServiceSettings(**overrides)
    # The scheduler thread needs the GIL back quickly after each decode (which releases it) to
    # start the next one; the default 5 ms switch interval would idle the model between steps
    # whenever the event loop is busy writing streams.
    sys.setswitchinterval(0.0005)
    # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set (shared.telemetry)
    telemetry = Telemetry.from_environ(f"arena-model-{settings.model}")
    configure_logging(settings.log_format, settings.log_level,
                      record_filter=telemetry.log_filter() if telemetry else None)
    try:
        spec = settings.resolve(catalogue)
    except CatalogueError as exc:
        log.error("%s", exc)
        return 2
    try:
        tls = uvicorn_tls(settings.tls_cert, settings.tls_key)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    # Cold start: the model loads (C code, the GIL released) while the service's modules and the
    # HTTP stack (FastAPI, uvicorn, Prometheus) are imported and the app built; only llama.cpp's
    # bindings come first.
    from services.instance import start_service
    service = start_service(catalogue, settings, spec)
    import uvicorn
    from services.app import create_app
    from services.drain import DrainingServer
    app = create_app(catalogue, settings, telemetry, service=service)
    host = settings.host or catalogue.fleet.service_host
    config = uvicorn.Config(app, host=host, port=spec.port, log_level=settings.log_level.lower(), log_config=None,
                            access_log=False, timeout_graceful_shutdown=5, **tls)
    server = DrainingServer(config, service, settings.drain_timeout)
    log.info("serving %s on %s://%s:%d", spec.key, "https" if tls else "http", host, spec.port)
    server.run()
    return 0 if service.status != "error" else 1


