"""The model service's HTTP app: OpenAI's API plus health, with thin routes over
`GenerationService`."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Gauge
from starlette.requests import ClientDisconnect

from shared.api_docs import attach_api_docs
from shared.disconnect import cancel_on_disconnect
from shared import sse
from shared.catalogue import Catalogue
from shared.body_limit import BodyLimit
from shared.body_parsing import BodyWork, body_schema, parse_model_body
from shared.errors import error_body, install_error_handlers
from shared.openapi import COMPLETION_RESPONSES, METRICS_RESPONSES, publish_openapi
from shared.instance_auth import INSTANCE_SECRET_HEADER, secret_matches
from shared.telemetry import Telemetry
from services.engine import DoneEvent, ErrorEvent, TokenEvent
from services.choice_output import ChoiceOutput
from services.errors import SERVICE_ERRORS
from services.exceptions import GenerationCancelled, GenerationFailed
from services.generation import GenerationService, JobStream, PreparedRequest
from services.instance import build_service
from services.metrics import RequestCounter, ServiceMetrics
from services.openai_format import ResponseShaper
from services.protocol import ChatCompletionRequest, CompletionRequest, GenerationParams
from services.settings import ServiceSettings

RequestBody = TypeVar("RequestBody", ChatCompletionRequest, CompletionRequest)


def create_app(catalogue: Catalogue, settings: ServiceSettings, telemetry: Telemetry | None = None,
               service: GenerationService | None = None) -> FastAPI:
    """The service of `settings.model`, as the catalogue describes it with the settings'
    overrides. The model loads in the background once the app starts (`/health` says
    `loading` meanwhile); `app.state.service` is the `GenerationService` (a `LlamaServerService`
    for the llama-server engine). `telemetry` (`shared.telemetry`): a server span per request,
    continuing the gateway's trace. `service`: one `build_service` made (and maybe started
    loading) already."""
    if service is None:
        service = build_service(catalogue, settings)
    instance_secret = settings.instance_secret

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        service.start_loading()  # unless `arena serve` started it already
        yield
        await service.aclose()
        if telemetry is not None:
            telemetry.shutdown()

    app = FastAPI(title=f"Serverless LLM Arena model service: {service.spec.key}", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = service
    install_error_handlers(app, SERVICE_ERRORS)
    publish_openapi(app, body_models=(ChatCompletionRequest, CompletionRequest))
    metrics = ServiceMetrics(service)
    app.state.metrics = metrics
    app.add_middleware(RequestCounter, metrics=metrics)

    attach_api_docs(app)  # /docs and /swagger-ui, with Swagger UI served by the service itself

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
        await service.refresh_details()
        return service.health_details().model_dump()

    @app.get("/metrics", response_class=Response, responses=METRICS_RESPONSES)
    async def prometheus_metrics() -> Response:
        await service.refresh_details()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

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

    body_work = BodyWork()
    Gauge("arena_service_large_bodies_parsing", "Large request bodies being parsed (and their prompts made) in worker threads now.",
          registry=metrics.registry).set_function(lambda: body_work.running)

    async def read_body(request: Request, model: type[RequestBody],
                        prepare: Callable[[RequestBody], PreparedRequest]) -> tuple[RequestBody, PreparedRequest]:
        """The body as `model`, and its prompt made; for a large body both off the event loop
        (`shared.body_parsing`: rendering a long history's template and tokenizing it cost as
        much as its validation)."""
        try:
            raw = await request.body()  # at most max_body_bytes (BodyLimit)
        except ClientDisconnect:  # gone mid-upload: the quiet 400 FastAPI's own body parameter gives
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from None
        return await body_work.run(len(raw), read_and_prepare, model, raw, request.headers.get("content-type"),
                                   prepare)

    @app.post("/v1/chat/completions", responses=COMPLETION_RESPONSES, openapi_extra=body_schema(ChatCompletionRequest))
    async def chat_completions(request: Request):
        body, prepared = await read_body(request, ChatCompletionRequest, service.prepare_chat)
        return await respond(body, prepared, request, chat=True)

    @app.post("/v1/completions", responses=COMPLETION_RESPONSES, openapi_extra=body_schema(CompletionRequest))
    async def completions(request: Request):
        body, prepared = await read_body(request, CompletionRequest, service.prepare_completion)
        return await respond(body, prepared, request, chat=False)

    async def respond(body: ChatCompletionRequest | CompletionRequest, prepared, request: Request, *, chat: bool):
        stream = await service.open_stream(prepared)
        shaper = ResponseShaper(service.spec.key, chat=chat, want_logprobs=body.wanted_top_logprobs is not None)
        outputs = [service.choice_output(prepared, index) for index in range(prepared.n)]
        headers = ignored_params_header(body)
        if body.stream:
            return StreamingResponse(sse_events(stream, shaper, outputs, body, metrics), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
        response = await whole_response(stream, shaper, outputs, body, request, metrics)
        response.headers.update(headers)
        return response

    if telemetry is not None:
        telemetry.instrument_app(app)
    return app


IGNORED_PARAMS_HEADER = "X-Arena-Ignored-Params"
# Anything but printable ASCII: a control character (CR, LF, NUL) in a header value makes the
# server drop the connection without an answer.
UNSAFE_HEADER_CHARACTERS = re.compile(r"[^\x20-\x7e]")


def read_and_prepare(model: type[RequestBody], raw: bytes, content_type: str | None,
                     prepare: Callable[[RequestBody], PreparedRequest]) -> tuple[RequestBody, PreparedRequest]:
    body = parse_model_body(model, raw, content_type)
    return body, prepare(body)


def ignored_params_header(body: GenerationParams) -> dict[str, str]:
    """The request's fields this service does not know (accepted, not acted on), as vLLM logs
    them; bounded so a hostile body cannot grow the header."""
    names = sorted(body.model_extra or {})
    if not names:
        return {}
    shown = [UNSAFE_HEADER_CHARACTERS.sub("?", name[:64]) for name in names[:32]]
    return {IGNORED_PARAMS_HEADER: ", ".join(shown) + (", ..." if len(names) > 32 else "")}


async def sse_events(stream: JobStream, shaper: ResponseShaper, outputs: list[ChoiceOutput],
                     body: GenerationParams, metrics: ServiceMetrics) -> AsyncIterator[bytes]:
    dones: list[DoneEvent] = []
    try:
        first = shaper.first_chunks(len(outputs))
        if first:
            yield first
        async for event in stream:
            if isinstance(event, TokenEvent):
                for delta in outputs[event.index].feed(event.text, event.logprobs):
                    yield shaper.delta_chunk(event.index, delta)
            elif isinstance(event, DoneEvent):
                dones.append(event)
                output = outputs[event.index]
                for delta in output.finish(event.finish_reason):
                    yield shaper.delta_chunk(event.index, delta)
                last = len(dones) == len(outputs) or event.finish_reason == "cancelled"
                yield shaper.finish_chunk(output, dones if last else None, body.include_perf)
                if last:
                    metrics.observe(dones)
                    if body.include_usage_in_stream:
                        yield shaper.usage_chunk(dones)
                    yield sse.DONE
            elif isinstance(event, ErrorEvent):
                yield sse.error_event(SERVICE_ERRORS.api_error(event.error).body())
    finally:
        stream.close()


async def whole_response(stream: JobStream, shaper: ResponseShaper, outputs: list[ChoiceOutput],
                         body: GenerationParams, request: Request, metrics: ServiceMetrics) -> Response:
    """Collect a non-streamed answer; a client that disconnects meanwhile cancels the job."""
    dones: list[DoneEvent] = []
    try:
        async with cancel_on_disconnect(request.receive):
            async for event in stream:
                if isinstance(event, TokenEvent):
                    outputs[event.index].feed(event.text, event.logprobs)
                elif isinstance(event, ErrorEvent):
                    raise event.error
                elif isinstance(event, DoneEvent):
                    if event.finish_reason == "cancelled":
                        raise GenerationCancelled()
                    outputs[event.index].finish(event.finish_reason)
                    dones.append(event)
                    if len(dones) == len(outputs):
                        metrics.observe(dones)
                        return JSONResponse(shaper.whole(outputs, dones, body.include_perf))
            raise GenerationFailed("The generation ended without a result.")
    finally:
        stream.close()
    # The client went away: nobody reads this answer (499 is nginx's "client closed request").
    return Response(status_code=499)
