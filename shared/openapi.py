"""Each app's OpenAPI document says what it really answers: every error in OpenAI's shape
(a `default` response, since any route can answer 400, 401, 404, 413, 415, 429 or 503),
never FastAPI's 422 (validation errors are 400s here). Fuzzing checks the apps against it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}

#: The 200 of a completion endpoint: JSON, or server-sent events when `stream` is true.
COMPLETION_RESPONSES = {200: {"description": "The completion; a stream of server-sent events when `stream` is true",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          "text/event-stream": {"schema": {"type": "string"}}}}}

#: The 200 of a Prometheus `/metrics` endpoint.
METRICS_RESPONSES = {200: {"description": "Prometheus metrics",
                           "content": {"text/plain": {"schema": {"type": "string"}}}}}


def _with_errors(document: dict[str, Any]) -> dict[str, Any]:
    document.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error = {"description": "An error, in OpenAI's shape",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = error
    return document


def publish_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and /openapi.json) return the document with the errors described."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(get_openapi(title=app.title, version=app.version, routes=app.routes,
                                                          description=app.description))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
