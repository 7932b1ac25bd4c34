"""OpenAI-shaped errors, for the model service and the gateway alike.

Domain code raises plain exceptions (`DomainError` subclasses) that know nothing of HTTP. Each
app has one `ErrorTable` at its edge (`services/errors.py`, `gateway/errors.py`) mapping each
exception type to a status, type, code and param; `install_error_handlers(app, table)` answers
them, and every other failure, as ``{"error": {"message", "type", "param", "code"}}``. Nothing
reaches the client as a bare 500 traceback.

`ApiError` remains for code that already speaks HTTP (routes, auth, the proxy): it carries its
own status and is answered as it is.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from shared import sse

if TYPE_CHECKING:
    # FastAPI is imported where a response or a handler is made, not with the error types: a
    # model service's engine raises these, and its model's load starts before FastAPI is imported.
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


def _type_for(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


class DomainError(Exception):
    """A failure named by domain code. `param` is the request field at fault, when one is;
    `retry_after` the seconds after which trying again may succeed, when known."""

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class ModelNotFound(DomainError):
    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or is not served here.", param="model")
        self.model = model


class ApiError(Exception):
    """An error to answer in OpenAI's shape, raised by code that already speaks HTTP."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 type: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _type_for(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)

    def response(self) -> JSONResponse:
        from fastapi.responses import JSONResponse

        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse_event(self) -> bytes:
        """The error as one server-sent event (without ``[DONE]``), for a stream already started."""
        return sse.encode(self.body())


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def model_not_found(model: str) -> ApiError:
    return ApiError(404, str(ModelNotFound(model)), code="model_not_found", param="model")


@dataclass(frozen=True)
class ErrorSpec:
    """How clients see one kind of domain error. `type` defaults by status; `param` is used
    when the exception names none."""

    status: int
    code: str | None = None
    type: str | None = None
    param: str | None = None


INTERNAL = ErrorSpec(500, "internal_error", "server_error")


class ErrorTable:
    """Domain exception types -> OpenAI errors. A subclass uses its nearest mapped ancestor."""

    def __init__(self, specs: Mapping[type[BaseException], ErrorSpec]) -> None:
        self.specs = dict(specs)

    def spec_for(self, exc: BaseException) -> ErrorSpec | None:
        for cls in type(exc).__mro__:
            if cls in self.specs:
                return self.specs[cls]
        return None

    def api_error(self, exc: BaseException) -> ApiError:
        """The answer to `exc`: itself if an `ApiError`, its table entry, else an internal error."""
        if isinstance(exc, ApiError):
            return exc
        spec = self.spec_for(exc)
        if spec is None:
            return ApiError(INTERNAL.status, f"Internal error: {type(exc).__name__}", code=INTERNAL.code,
                            type=INTERNAL.type)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else None
        return ApiError(spec.status, str(exc), code=spec.code, type=spec.type,
                        param=getattr(exc, "param", None) or spec.param, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    message = first.get("msg", "invalid value")
    return (f"Invalid value for '{param}': {message}" if param else f"Invalid request: {message}"), param


def install_error_handlers(app: FastAPI, table: ErrorTable | None = None) -> None:
    """Answer every exception a route can raise in OpenAI's shape, domain errors by `table`."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    table = table or ErrorTable({})

    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
        return table.api_error(exc).response()

    app.add_exception_handler(ApiError, _api_error)
    for exc_type in table.specs:
        app.add_exception_handler(exc_type, _domain_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param, code="invalid_value" if param else "invalid_json"),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status)
        return JSONResponse(error_body(message, type=_TYPE_BY_STATUS.get(status, "invalid_request_error"), code=code),
                            status_code=status, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return table.api_error(exc).response()
