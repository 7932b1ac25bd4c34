"""The request path: pick a ready instance, forward, stream the answer back untouched.

Before the first byte reaches the client, a connect error, a timeout, a broken answer or a 503
from an instance is tried again on another instance (tenacity: bounded attempts, exponential
back-off). For a stream, the first chunk is read from the instance before the client gets
anything, so an instance that dies right after its headers is retried too. After bytes have
flowed, a broken upstream ends the stream with an OpenAI-shaped error event and `[DONE]`.
A client that disconnects closes the upstream request, which frees the instance's slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.auto_routing import AUTO_MODEL, AutoRouter
from gateway.balancing import Balancer
from gateway.health_monitor import HealthMonitor
from gateway.instances import Instance, InstanceRegistry
from gateway.logs import log_request
from gateway.metrics import GatewayMetrics, RequestSample
from shared import sse
from gateway.overload_buffer import OverloadBuffer
from gateway.upstream_http import (ATTEMPT_ATTRIBUTES, CLIENT_ERRORS, HttpLimits, UpstreamFailure, UpstreamHttp,
                                   check_head, classify, name_attempt_span, read_capped, record_attempt_status)
from gateway.response_cache import ResponseCache
from shared.body_parsing import BodyWork
from shared.disconnect import cancel_on_disconnect
from shared.errors import ApiError, error_body, model_not_found
from shared.instance_auth import INSTANCE_SECRET_HEADER
from shared.telemetry import Telemetry

log = logging.getLogger("gateway.upstream")

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_PERF = re.compile(rb'"perf"\s*:\s*(\{[^{}]*\})')
# The gateway says what it relays: an instance cannot serve HTML (or anything else) from the
# arena's origin by choosing its own Content-Type.
_JSON, _EVENT_STREAM = "application/json", "text/event-stream"
_NOSNIFF = {"x-content-type-options": "nosniff"}
_MAX_EVENT_BYTES = 1024 * 1024  # one server-sent event of a stream


@dataclass(frozen=True)
class ProxyPolicy:
    connect_timeout: float = 2.0
    request_timeout: float = 600.0
    attempts: int = 3
    backoff: float = 0.05
    backoff_max: float = 1.0
    max_connections: int = 512
    max_response_bytes: int = 8 * 1024 * 1024


class _Retryable(Exception):
    """One attempt failed in a way another instance may not."""

    def __init__(self, reason: str, message: str, *, status: int = 503, content: bytes | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.content = content
        self.headers = headers or {}


BATTLE_LABEL = "arena-battle"


@dataclass
class _Call:
    """What one client request went through, for the request log and metrics."""

    endpoint: str
    model: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    instance: Instance | None = None
    attempts: int = 0
    status: int = 0
    ttft: float | None = None
    perf: dict[str, Any] | None = None  # the instance's own timings, when the request asked for `perf`
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = 0
    key_id: str | None = None
    # A battle side: counted in the metrics under BATTLE_LABEL, not its model or instance, and
    # not in the instance's public counters, so that nobody watching /metrics or /api/status
    # learns which model is answering a blind battle.
    private: bool = False

    @property
    def label(self) -> str:
        return BATTLE_LABEL if self.private else self.model

    def count_on(self, instance: Instance, field_name: str) -> None:
        if not self.private:
            setattr(instance, field_name, getattr(instance, field_name) + 1)
    finished: bool = False


@dataclass
class _Opened:
    """An instance's answer, holding its lease and its connection until `aclose`."""

    instance: Instance
    response: aiohttp.ClientResponse
    first: bytes
    streaming: bool          # False: the whole body is in `first`
    resources: AsyncExitStack

    async def aclose(self) -> None:
        await self.resources.aclose()


def json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (400 `invalid_json` otherwise)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:
        raise _nested_too_deeply() from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def json_bytes(body: dict[str, Any]) -> bytes:
    """`body` encoded again (for a resolved or served model name). A large body is parsed in a
    worker thread, whose stack is shallower than the event loop's: nesting that parsed there can
    be too deep to encode here, and is the client's 400, not our 500."""
    try:
        return json.dumps(body).encode()
    except RecursionError:
        raise _nested_too_deeply() from None


def _nested_too_deeply() -> ApiError:
    return ApiError(400, "The request body is nested too deeply.", code="invalid_json")


class UpstreamProxy:
    def __init__(self, registry: InstanceRegistry, balancer: Balancer, monitor: HealthMonitor,
                 metrics: GatewayMetrics, router: AutoRouter, policy: ProxyPolicy,
                 *, instance_secret: str | None = None, telemetry: Telemetry | None = None) -> None:
        self.registry = registry
        self.balancer = balancer
        self.monitor = monitor
        self.metrics = metrics
        self.router = router
        self.policy = policy
        self.buffer = OverloadBuffer(self._buffer_limits)
        self.body_work = BodyWork()  # a large body is parsed (and its cache key made) off the event loop
        registry.slot_listeners.append(lambda instance: self.buffer.slot_freed(instance.model))
        headers = {"content-type": _JSON, "accept-encoding": "identity"}
        if instance_secret:
            headers[INSTANCE_SECRET_HEADER] = instance_secret
        # With tracing on, each attempt is a client span of its own (and sends `traceparent` on).
        self._traced = telemetry is not None
        trace_configs = [telemetry.client_trace_config(name_attempt_span, record_attempt_status)] if telemetry else []
        self._http = UpstreamHttp(HttpLimits(connect_timeout=policy.connect_timeout,
                                             request_timeout=policy.request_timeout,
                                             max_connections=policy.max_connections,
                                             max_response_bytes=policy.max_response_bytes), headers, trace_configs)
        # Built once; each call of `_open_with_retries` runs on tenacity's own copy.
        self._open_with_retries = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.backoff, min=policy.backoff, max=policy.backoff_max),
            retry=retry_if_exception_type(_Retryable), reraise=True).wraps(self._attempt)
        self.responses = ResponseCache(0, 0)  # off unless the app sets one (gateway.response_cache)

    async def start(self) -> None:
        await self._http.start()

    async def stop(self) -> None:
        await self._http.stop()

    # -- choosing ------------------------------------------------------------------------

    def _buffer_limits(self, model: str) -> tuple[int, float]:
        spec = self.registry.catalogue.models.get(model)
        return (spec.overload_buffer, spec.overload_wait) if spec else (0, 0.0)

    def has_free_slot(self, model: str) -> bool:
        return any(instance.has_free_slot() for instance in self.registry.ready(model))

    def resolve_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required: a model key from /v1/models, or \"auto\".",
                           code="invalid_value", param="model")
        if model == AUTO_MODEL:
            chosen = self.router.choose(body, self.registry.ready_models())
            if chosen is None:
                raise ApiError(503, "No model has a ready instance right now.", code="no_ready_instance",
                               headers={"Retry-After": "5"})
            return chosen
        if not self.registry.is_known_model(model):
            raise model_not_found(model)
        return model

    def pick(self, model: str, tried: set[str], body: dict[str, Any] | None = None) -> Instance:
        ready = self.registry.ready(model)
        if not ready:
            raise ApiError(503, f"No ready instance of '{model}' right now; try again shortly.",
                           code="no_ready_instance", headers={"Retry-After": "5"})
        fresh = [inst for inst in ready if inst.instance_id not in tried] or ready
        free = [inst for inst in fresh if inst.has_free_slot()]
        return self.balancer.choose(free or fresh, body)

    # -- the arena's entry point ---------------------------------------------------------

    async def stream_chat(self, body: dict[str, Any], info: dict[str, Any] | None = None, *,
                          private: bool = False) -> AsyncIterator[bytes]:
        """Raw SSE bytes of a streamed chat completion of ``body["model"]``.

        Raises `ApiError` before the first chunk (unknown model, no ready instance, every
        attempt failed, or the instance's own refusal, such as a prompt over its context);
        closing the generator closes the upstream request. ``info``, if given, receives
        ``model`` and ``instance_id`` once an instance answered. ``private`` (a battle side)
        keeps the request out of the per-model and per-instance counters.
        """
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        model = self.resolve_model(body)
        body = {**body, "model": model, "stream": True}
        call = _Call("/v1/chat/completions", model, True, private=private)
        opened = await self._open(call, body, None, stream=True)
        if not opened.streaming:  # the instance answered an error (or did not stream)
            error = _upstream_api_error(opened.response.status, opened.first)
            call.status, call.error = error.status, "upstream_error"
            await self._close(call, opened)
            raise error
        if info is not None:
            info.update(model=model, instance_id=opened.instance.instance_id)
        relay = self._relay(call, opened)
        try:
            async for chunk in relay:
                yield chunk
        finally:
            await relay.aclose()

    # -- the /v1 routes ------------------------------------------------------------------

    async def handle(self, request: Request, endpoint: str, key_id: str | None = None) -> Response:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != _JSON:  # a cross-site form (text/plain, urlencoded) cannot spend model time
            raise ApiError(415, "Send the request as JSON, with the header Content-Type: application/json.",
                           code="unsupported_media_type")
        raw = await request.body()  # at most max_body_bytes (shared.body_limit)
        size = len(raw)
        body = await self.body_work.run(size, json_object, raw)
        stream = body.get("stream") is True
        try:
            model = self.resolve_model(body)
        except ApiError as exc:  # counted, under one label so that made-up names add no series
            requested = body.get("model")
            known = isinstance(requested, str) and self.registry.is_known_model(requested)
            self.metrics.error(requested if known else "unknown", exc.code or exc.type)
            raise
        call = _Call(endpoint, model, stream, key_id=key_id)
        if body["model"] != model:  # "auto"
            body["model"] = model
            raw = None  # re-encode
        cache_key = None
        if self.responses.wants(body, request.headers):  # else no key is made (nor a thread hop)
            cache_key = await self.body_work.run(size, self.responses.key_for, endpoint, model, body, request.headers)
        if (cached := self.responses.get(cache_key)) is not None:
            return self.responses.response(cached, body, {"x-arena-model": model})
        try:
            opened = await _unless_disconnected(request.receive, self._open(call, body, raw, stream=stream))
        except ApiError as exc:
            call.status, call.error = exc.status, exc.code or exc.type
            self._finish(call)
            raise
        if opened is None:  # the client left before the instance answered; the request is cancelled
            call.status, call.error = 499, "client_disconnected"
            self._finish(call)
            return Response(status_code=499)
        headers = {"x-arena-model": model, "x-arena-instance": opened.instance.instance_id, **_NOSNIFF}
        if not opened.streaming:
            await self._close(call, opened)
            self.responses.remember_whole(cache_key, opened.response.status, opened.first)
            return self._complete(call, opened, headers)
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        return RelayResponse(self._relay(call, opened, cache_key), status_code=opened.response.status, headers=headers,
                             media_type=_EVENT_STREAM)

    def _complete(self, call: _Call, opened: _Opened, headers: dict[str, str]) -> Response:
        status, content = opened.response.status, opened.first
        call.status = status
        if status < 400:
            self._count_usage(call, content)
            return Response(content, status_code=status, headers=headers, media_type=_JSON)
        call.error = "upstream_error"
        result = _error_passthrough(status, content, headers)
        call.status = result.status_code
        return result

    # -- attempts ------------------------------------------------------------------------

    async def _open(self, call: _Call, body: dict[str, Any], raw: bytes | None, *, stream: bool) -> _Opened:
        tried: set[str] = set()
        if self.registry.ready(call.model):  # with none ready, `pick` answers 503 at once
            try:
                await self.buffer.wait_for_slot(call.model, lambda: self.has_free_slot(call.model))
            except ApiError as exc:
                self.metrics.error(call.label, exc.code or "overloaded")
                raise
        try:
            return await self._open_with_retries(call, body, raw, stream, tried)
        except _Retryable as exc:
            self.metrics.error(call.label, exc.reason)
            if exc.content is not None and exc.status == 503:
                headers = {"Retry-After": exc.headers.get("retry-after", "1")}
                raise ApiError(503, _upstream_message(exc.content) or exc.message, code="instances_busy",
                               headers=headers) from None
            if exc.content is not None:
                raise ApiError(502, f"The instance failed: {_upstream_message(exc.content) or exc.message}",
                               code="upstream_error") from None
            raise ApiError(503, f"No instance of '{call.model}' could take the request: {exc.message}",
                           code="upstream_unavailable", headers={"Retry-After": "2"}) from None

    async def _attempt(self, call: _Call, body: dict[str, Any], raw: bytes | None, stream: bool,
                       tried: set[str]) -> _Opened:
        instance = self.pick(call.model, tried, body)
        tried.add(instance.instance_id)
        if call.attempts:
            self.metrics.retries.labels(call.label, "next_instance").inc()
        call.attempts += 1
        call.instance = instance
        if self._traced:
            ATTEMPT_ATTRIBUTES.set({"arena.model": call.model, "arena.instance.id": instance.instance_id,
                                    "arena.attempt": call.attempts})
        if raw is None or instance.served_model:
            payload = body if not instance.served_model else {**body, "model": instance.served_model}
            content = json_bytes(payload)
        else:
            content = raw
        call.count_on(instance, "requests_total")
        resources = AsyncExitStack()
        try:
            await resources.enter_async_context(instance.lease())
            response = await resources.enter_async_context(self._http.post(instance.url + call.endpoint, content))
            check_head(response)
            if response.status >= 500:  # busy or broken before answering: another instance may serve it
                content = await read_capped(response, 64 * 1024)
                self.monitor.probe_soon(instance)
                if response.status != 503:
                    call.count_on(instance, "errors_total")
                raise _Retryable(f"upstream_{response.status}", f"instance {instance.instance_id} answered "
                                 f"{response.status}", status=response.status, content=content,
                                 headers=dict(response.headers))
            if stream and response.status == 200:
                first = await response.content.readany()
                call.ttft = time.perf_counter() - call.started
                return _Opened(instance, response, first, True, resources)
            content = await read_capped(response, self.policy.max_response_bytes)
            return _Opened(instance, response, content, False, resources)
        except CLIENT_ERRORS as exc:
            await resources.aclose()
            failure = classify(exc)
            call.count_on(instance, "errors_total")
            if failure.dead:
                self.monitor.mark_failed(instance, f"{failure.kind} on a request: {failure}")
            raise _Retryable(failure.kind, f"{failure} (instance {instance.instance_id})") from exc
        except BaseException:
            await resources.aclose()
            raise

    def _relay(self, call: _Call, opened: _Opened, cache_key: str | None = None) -> _Relay:
        # The response cache records a complete stream on its way through; `_Relay` stays
        # outermost, so that closing it releases the instance whether or not it ever started.
        chunks = self.responses.recording(cache_key, self._relay_chunks(call, opened))
        return _Relay(chunks, lambda: self._close(call, opened))

    async def _relay_chunks(self, call: _Call, opened: _Opened) -> AsyncIterator[bytes]:
        instance, content = opened.instance, opened.response.content
        call.status = opened.response.status
        pending = b""  # the start of an event not yet complete: held back, so a break drops it
        try:
            chunk = opened.first
            while chunk:
                data = pending + chunk if pending else chunk
                end = max(data.rfind(b"\n\n") + 2, data.rfind(b"\r\n\r\n") + 4, 0)
                if end:
                    self._count_chunk(call, data[:end])
                    yield data[:end]
                pending = data[end:]
                if len(pending) > _MAX_EVENT_BYTES:
                    raise UpstreamFailure("upstream_broken", "an event over the size limit", dead=False)
                chunk = await content.readany()
            if pending:  # the upstream ended without a last separator: pass what it sent
                yield pending
        except CLIENT_ERRORS as exc:
            failure = classify(exc)
            call.count_on(instance, "errors_total")
            call.error = "upstream_stream_broken"
            if failure.dead:
                self.monitor.mark_failed(instance, f"{failure.kind} during a stream: {failure}")
            error = ApiError(502, f"The instance serving '{call.model}' broke off the stream "
                                  f"({failure.kind}); the answer is incomplete.",
                             code="upstream_stream_broken")
            yield b"\n\n" + sse.error_event(error.body())
        except (asyncio.CancelledError, GeneratorExit):
            call.error = call.error or "client_disconnected"
            raise
        finally:
            await self._close(call, opened)

    async def _close(self, call: _Call, opened: _Opened) -> None:
        """Release the instance's lease and connection, and count the call: once, whichever
        path gets here first (a relay's end, a client gone before the relay started)."""
        await opened.aclose()
        if not call.finished:
            call.finished = True
            self._finish(call)

    # -- accounting ----------------------------------------------------------------------

    def _count_chunk(self, call: _Call, chunk: bytes) -> None:
        call.chunks += chunk.count(b"data: {")
        if b'"completion_tokens"' in chunk:
            self._count_usage(call, chunk)

    @staticmethod
    def _count_usage(call: _Call, content: bytes) -> None:
        if match := _PROMPT_TOKENS.search(content):
            call.prompt_tokens = int(match.group(1))
        if match := _COMPLETION_TOKENS.search(content):
            call.completion_tokens = int(match.group(1))
        if match := _PERF.search(content):
            try:
                perf = json.loads(match.group(1))
            except ValueError:
                perf = None
            call.perf = perf if isinstance(perf, dict) else None

    def _finish(self, call: _Call) -> None:
        """Count and log `call` once the loop is free again: after the answer went out, so
        that the client does not wait for the request log."""
        try:
            asyncio.get_running_loop().call_soon(self._record, call)
        except RuntimeError:  # no loop running (a generator finalised late): now, then
            self._record(call)

    def _record(self, call: _Call) -> None:
        elapsed = time.perf_counter() - call.started
        instance_id = call.instance.instance_id if call.instance else "-"
        label, counted_instance = (call.label, BATTLE_LABEL if call.private else instance_id)
        m = self.metrics
        m.requests.labels(label, counted_instance, call.endpoint, str(call.status)).inc()
        m.latency.labels(label, counted_instance, "true" if call.stream else "false").observe(elapsed)
        if call.error:
            m.error(label, call.error)
        if call.ttft is not None:
            m.ttft.labels(label, counted_instance).observe(call.ttft)
        completion = call.completion_tokens
        if completion is None and call.stream and call.chunks:
            completion = max(0, call.chunks - 2)  # chunks minus the role and finish chunks
        if completion:
            m.tokens.labels(label, counted_instance, "completion").inc(completion)
        if call.prompt_tokens:
            m.tokens.labels(label, counted_instance, "prompt").inc(call.prompt_tokens)
        if m.observers:
            m.observe(RequestSample.of(
                model=label, instance=counted_instance, key_id=call.key_id, status=call.status,
                error=bool(call.error) or call.status >= 400, duration=elapsed, ttft=call.ttft, perf=call.perf,
                prompt_tokens=call.prompt_tokens or 0, completion_tokens=completion or 0))
        log_request(endpoint=call.endpoint, model=call.model, instance=instance_id, status=call.status,
                    stream=call.stream, attempts=call.attempts, ms=round(elapsed * 1000, 2),
                    ttft_ms=None if call.ttft is None else round(call.ttft * 1000, 2),
                    completion_tokens=completion, error=call.error, key=call.key_id)


class _Relay:
    """The relay of one answer as an async iterator whose `aclose` always releases the
    answer, even when iteration never started (a client gone before the head was sent): the
    `finally` of an async generator that never ran does not run on `aclose`."""

    def __init__(self, chunks: AsyncIterator[bytes], release: Callable[[], Awaitable[None]]) -> None:
        self._chunks = chunks
        self._release = release

    def __aiter__(self) -> "_Relay":
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self._release()


class RelayResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once, whatever the ASGI
    version, and then cancels the relay (closing the relay releases the upstream answer).

    The relay runs in the calling task; a watcher task cancels it when the client leaves
    (plain asyncio: anyio's task group and cancel scope cost more than the relay itself)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with cancel_on_disconnect(receive):
                try:
                    await self.stream_response(send)
                except OSError:
                    pass
        finally:
            await self.body_iterator.aclose()


async def _unless_disconnected(receive: Receive, work: Any) -> Any:
    """Run `work` unless the client disconnects first (then cancel it and return None)."""
    async with cancel_on_disconnect(receive):
        return await work
    return None


def _upstream_message(content: bytes) -> str | None:
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return None


def _upstream_api_error(status: int, content: bytes) -> ApiError:
    """An instance's error answer as an `ApiError`, keeping its message and code (such as
    context_length_exceeded); a server error of the instance is the gateway's 502."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    message = _upstream_message(content) or f"The instance answered {status}."
    if status < 400:  # a success where a stream was asked for
        status, message = 502, f"The instance answered {status} without a stream."
    code, param = error.get("code"), error.get("param")
    return ApiError(502 if status >= 500 else status, message,
                    code=code if isinstance(code, str) else "upstream_error",
                    param=param if isinstance(param, str) else None,
                    type="upstream_error" if status >= 500 else None)


def _error_passthrough(status: int, content: bytes, headers: dict[str, str]) -> Response:
    """An instance's error answer, in OpenAI's shape whatever shape it came in."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return Response(content, status_code=status, headers=headers, media_type="application/json")
    message = _upstream_message(content) or f"The instance answered {status}."
    if status >= 500:
        status = 502
    body = error_body(message, type="upstream_error" if status >= 500 else "invalid_request_error",
                      code="upstream_error")
    return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/json")
