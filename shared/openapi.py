"""Each app's OpenAPI document says what it really answers: every error in OpenAI's shape
(a `default` response, since any route can answer 400, 401, 404, 413, 415, 429 or 503),
never FastAPI's 422 (validation errors are 400s here). Fuzzing checks the apps against it."""

from __future__ import annotations

from typing import Any, Sequence

from fastapi import FastAPI
from pydantic import BaseModel
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
    document.setdefault("components", {}).setdefault("schemas", {})["OpenAIError"] = ERROR_SCHEMA
    error = {"description": "An error, in OpenAI's shape",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = error
    return document


def _model_schemas(models: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """The component schemas FastAPI writes for `models` as body parameters (and what they use)."""
    documenting = FastAPI()
    for model in models:
        def endpoint(body): ...  # noqa: E704
        endpoint.__annotations__ = {"body": model}
        documenting.post(f"/{model.__name__}")(endpoint)
    return documenting.openapi()["components"]["schemas"]


def publish_openapi(app: FastAPI, body_models: Sequence[type[BaseModel]] = ()) -> None:
    """Make `app.openapi()` (and /openapi.json) return the document with the errors described.
    `body_models`: request models that routes read from their raw body (`shared.body_parsing`),
    whose schemas the document's components must hold as if they were body parameters."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
            if body_models:
                schemas = document.setdefault("components", {}).setdefault("schemas", {})
                for name, schema in _model_schemas(body_models).items():
                    schemas.setdefault(name, schema)
            app.openapi_schema = _with_errors(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
