"""Large request bodies parsed and validated off the event loop, a bounded number at once.

Parsing 4 MB of JSON and validating it against the OpenAI request models takes about half a
second of CPU (more on a loaded machine): on the event loop, every other client's stream,
`/health` and the drain would stand still meanwhile. `BodyWork.run` does a small body's work
in place (a thread hop costs more than the work) and a large body's in a worker thread of its
own limiter, at most `max_parallel` at once: beyond that it answers 503 `server_busy` at once,
so a flood of large bodies holds neither every worker thread nor the loop.

A thread holds the GIL while it runs C or Rust code (the JSON parser, pydantic-core), so the
loop may still wait for one such call; the models of a request's long lists let the GIL go
between items (`services.protocol.GilCheckpoint`), so no single call spans a whole body.

`parse_model_body` reads a body as FastAPI's own body parameter does (same content types, same
errors), for routes that take the raw body so as to validate it here.
"""

from __future__ import annotations

import email.message
import json
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError

from shared.errors import ApiError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: Bodies from this size on are parsed in a worker thread. Under it the loop stands still at
#: most about 10 ms (a 64 KiB chat body of short messages, under load), and the everyday small
#: request keeps its fast path: no thread hop (some 0.1 ms) and no bound.
DEFAULT_THRESHOLD_BYTES = 64 * 1024
#: Large bodies parsed at once (each holds one worker thread); one more gets a 503.
DEFAULT_MAX_PARALLEL = 2


class BodyWork:
    def __init__(self, threshold_bytes: int = DEFAULT_THRESHOLD_BYTES, max_parallel: int = DEFAULT_MAX_PARALLEL) -> None:
        self.threshold_bytes = threshold_bytes
        self.max_parallel = max_parallel
        self.running = 0
        self._limiter: anyio.CapacityLimiter | None = None  # made on the loop that uses it

    async def run(self, size: int, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)`: here for a body under the threshold, else in a worker thread (503
        `server_busy` when `max_parallel` are running). Nothing cancels a request while its body
        is read (the disconnect watch starts after); were it cancelled (uvicorn's forced
        shutdown), asyncio would not wait for the thread, and `running` would count one fewer
        than are at work until it ends. The limiter never makes anyone wait (the count refuses
        first): it keeps these threads out of anyio's default pool."""
        if size < self.threshold_bytes:
            return work(*args)
        if self.running >= self.max_parallel:
            raise ApiError(503, f"The server is reading {self.running} other large request bodies; "
                                "try again in a moment.", code="server_busy", headers={"Retry-After": "1"})
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_parallel)
        self.running += 1
        try:
            return await anyio.to_thread.run_sync(work, *args, limiter=self._limiter)
        finally:
            self.running -= 1


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_model_body(model: type[M], raw: bytes, content_type: str | None) -> M:
    """`raw` as `model`, read as FastAPI reads a JSON body parameter: JSON when the content type
    says so, else the bytes themselves (which no model accepts). Failures raise what FastAPI
    raises (`RequestValidationError`, or a 400 `HTTPException` for an unreadable body), so the
    app's handlers answer them as they answer FastAPI's own."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    body: Any = raw
    if _is_json(content_type):
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                                           "input": {}, "ctx": {"error": exc.msg}}]) from exc
        except Exception as exc:
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    try:
        return model.model_validate(body, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` of a route that reads `model` from its raw body: the request body as
    FastAPI documents a body parameter (the model's schema under components, by `publish_openapi`)."""
    return {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}, "required": True}}
