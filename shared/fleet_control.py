"""The local fleet's control channel: how the gateway asks `arena up` to start or drain a model
process at runtime.

The supervisor serves a tiny JSON API on a loopback port it picks itself, guarded by a random
bearer token. Both reach only the gateway child, through its environment (`CONTROL_URL_ENV`,
`CONTROL_TOKEN_ENV`); model processes never see them. The gateway asks, the supervisor owns
the processes (ports, core shares, signals): the gateway never forks model processes itself, so
nothing outlives `arena up`, and a restarted gateway finds the instances again with a `GET`.

    GET    /instances          every model process: id, model, url, state, threads, cpus
    POST   /instances          {"model": KEY, "spec": {...}}: start one (spec: the model's
                               catalogue entry to use, e.g. the runtime overlay's; default the file's)
    DELETE /instances/{id}     drain it (SIGTERM: the service finishes in-flight work), then remove it

States: ``starting`` (process up, not yet answering), ``running``, ``stopping``, ``exited``.
`FleetOperations` is what the server needs from the fleet (`shared.local_fleet.LocalFleet`).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

CONTROL_URL_ENV = "ARENA_FLEET_CONTROL_URL"
CONTROL_TOKEN_ENV = "ARENA_FLEET_CONTROL_TOKEN"
MAX_BODY_BYTES = 64 * 1024
_INSTANCE_PATH = re.compile(r"/instances/([A-Za-z0-9._-]{1,128})")

log = logging.getLogger("fleet.control")


class ControlRefused(Exception):
    """A request the fleet will not do: `status` and `code` say why to the gateway."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FleetOperations(Protocol):
    def list_instances(self) -> list[dict[str, Any]]: ...
    def start_instance(self, model: str, spec: dict[str, Any] | None) -> dict[str, Any]: ...
    def drain_instance(self, instance_id: str) -> dict[str, Any]: ...


class ControlServer:
    """The control API on 127.0.0.1 (a free port), in a daemon thread of the supervisor."""

    def __init__(self, fleet: FleetOperations, *, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.token = token or secrets.token_urlsafe(32)
        handler = type("Handler", (_Handler,), {"fleet": fleet, "token": self.token})
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fleet-control", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def child_env(self) -> dict[str, str]:
        """What the gateway child needs to reach this server."""
        return {CONTROL_URL_ENV: self.url, CONTROL_TOKEN_ENV: self.token}

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()  # waits for serve_forever: only when it runs
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    fleet: FleetOperations
    token: str
    server_version = "arena-fleet-control"
    timeout = 15  # seconds a connection may take to send its request: none pins a thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # the default writes every request to stderr
        log.debug("control: " + format, *args)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._answer(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def _handle(self, method: str) -> None:
        if not self._authorized():
            self._error(401, "invalid_control_token", "The fleet control token is missing or wrong.")
            return
        try:
            if method == "GET" and self.path == "/instances":
                self._answer(200, {"object": "list", "data": self.fleet.list_instances()})
            elif method == "POST" and self.path == "/instances":
                body = self._body()
                model = body.get("model")
                spec = body.get("spec")
                if not isinstance(model, str) or (spec is not None and not isinstance(spec, dict)):
                    raise ControlRefused(400, "invalid_request", "expected {\"model\": KEY, \"spec\": {...}?}")
                self._answer(201, self.fleet.start_instance(model, spec))
            elif method == "DELETE" and (match := _INSTANCE_PATH.fullmatch(self.path)):
                self._answer(202, self.fleet.drain_instance(match.group(1)))
            else:
                self._error(404, "not_found", f"no {method} {self.path} here")
        except ControlRefused as exc:
            self._error(exc.status, exc.code, exc.message)
        except Exception as exc:  # never take the supervisor down for one request
            log.exception("fleet control %s %s failed", method, self.path)
            self._error(500, "control_failed", f"{type(exc).__name__}: {exc}")

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            raise ControlRefused(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise ControlRefused(400, "invalid_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ControlRefused(400, "invalid_json", "the body must be a JSON object")
        return body

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


__all__ = ["CONTROL_TOKEN_ENV", "CONTROL_URL_ENV", "ControlRefused", "ControlServer", "FleetOperations"]
