"""The model service's HTTP app: OpenAI's API plus health, with thin routes over
`GenerationService`."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from shared.disconnect import cancel_on_disconnect
from shared import sse
from shared.catalogue import Catalogue
from shared.body_limit import BodyLimit
from shared.errors import error_body, install_error_handlers
from shared.openapi import COMPLETION_RESPONSES, METRICS_RESPONSES, publish_openapi
from shared.instance_auth import INSTANCE_SECRET_HEADER, secret_matches
from services.engine import DoneEvent, ErrorEvent, TokenEvent
from services.errors import SERVICE_ERRORS
from services.exceptions import GenerationCancelled, GenerationFailed
from services.generation import GenerationService, JobStream
from services.metrics import render_metrics
from services.openai_format import ResponseShaper
from services.protocol import ChatCompletionRequest, CompletionRequest, GenerationParams
from services.settings import ServiceSettings


def create_app(catalogue: Catalogue, settings: ServiceSettings) -> FastAPI:
    """The service of `settings.model`, as the catalogue describes it with the settings'
    overrides. The model loads in the background once the app starts (`/health` says
    `loading` meanwhile); `app.state.service` is the `GenerationService`."""
    service = GenerationService(settings.resolve(catalogue), instance_id=settings.instance_id,
                                model_cache=catalogue.fleet.model_cache_path())
    instance_secret = settings.instance_secret

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Load in a thread: /health answers "loading" meanwhile.
        loader = threading.Thread(target=service.load, name="model-loader", daemon=True)
        loader.start()
        yield
        service.shutdown()

    app = FastAPI(title=f"Serverless LLM Arena model service: {service.spec.key}", lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app, SERVICE_ERRORS)
    publish_openapi(app)

    async def require_instance_secret(request: Request, call_next):
        if request.url.path.startswith("/v1/") and not secret_matches(
                instance_secret, request.headers.get(INSTANCE_SECRET_HEADER)):
            return JSONResponse(error_body("This instance only answers requests from its gateway.",
                                           type="authentication_error", code="invalid_instance_secret"),
                                status_code=401)
        return await call_next(request)

    if instance_secret:  # without a secret every request passes: no middleware on the hot path
        app.middleware("http")(require_instance_secret)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: before the secret check reads

    def health_response() -> JSONResponse:
        status = service.status
        body = {"status": status, "model": service.spec.key, "instance_id": service.instance_id}
        if status == "error":
            body["error"] = service.load_error
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/health")
    async def health() -> JSONResponse:
        return health_response()

    @app.get("/health/ready")
    async def health_ready() -> JSONResponse:
        return health_response()

    @app.get("/health/live")
    async def health_live() -> dict:
        return {"status": "alive"}

    @app.get("/health/details")
    async def health_details() -> dict:
        return service.health_details().model_dump()

    @app.get("/metrics", response_class=Response, responses=METRICS_RESPONSES)
    async def metrics() -> Response:
        return Response(render_metrics(service), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict:
        spec = service.spec
        return {"id": spec.key, "object": "model", "created": int(service.started_at), "owned_by": "serverless-llm-arena",
                "display_name": spec.display_name, "n_ctx": spec.n_ctx, "max_tokens_limit": spec.max_tokens_limit}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict:
        service.check_model(model_id)
        return model_card()

    @app.post("/v1/chat/completions", responses=COMPLETION_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        return await respond(body, service.prepare_chat(body), request, chat=True)

    @app.post("/v1/completions", responses=COMPLETION_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        return await respond(body, service.prepare_completion(body), request, chat=False)

    async def respond(body: GenerationParams, prepared, request: Request, *, chat: bool):
        stream = await service.open_stream(prepared)
        shaper = ResponseShaper(service.spec.key, chat=chat)
        if body.stream:
            return StreamingResponse(sse_events(stream, shaper, body), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await whole_response(stream, shaper, body, request)

    return app


async def sse_events(stream: JobStream, shaper: ResponseShaper, body: GenerationParams) -> AsyncIterator[bytes]:
    try:
        first = shaper.first_chunk()
        if first:
            yield first
        async for event in stream:
            if isinstance(event, TokenEvent):
                yield shaper.text_chunk(event.text)
            elif isinstance(event, DoneEvent):
                yield shaper.final_chunks(event, include_usage=body.include_usage_in_stream,
                                          include_perf=body.include_perf)
            elif isinstance(event, ErrorEvent):
                yield sse.error_event(SERVICE_ERRORS.api_error(event.error).body())
    finally:
        stream.close()


async def whole_response(stream: JobStream, shaper: ResponseShaper, body: GenerationParams,
                         request: Request) -> Response:
    """Collect a non-streamed answer; a client that disconnects meanwhile cancels the job."""
    parts: list[str] = []
    try:
        async with cancel_on_disconnect(request.receive):
            async for event in stream:
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                elif isinstance(event, ErrorEvent):
                    raise event.error
                elif isinstance(event, DoneEvent):
                    if event.finish_reason == "cancelled":
                        raise GenerationCancelled()
                    return JSONResponse(shaper.whole("".join(parts), event, body.include_perf))
            raise GenerationFailed("The generation ended without a result.")
    finally:
        stream.close()
    # The client went away: nobody reads this answer (499 is nginx's "client closed request").
    return Response(status_code=499)
