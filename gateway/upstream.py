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
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.auto_routing import AUTO_MODEL, AutoRouter
from gateway.balancing import Balancer
from gateway.health_monitor import HealthMonitor
from gateway.http_client import (ConnectError, ConnectTimeout, HttpClient, HttpError, HttpResponse, ReadError,
                                 RemoteProtocolError, TimeoutException)
from gateway.instances import Instance, InstanceRegistry
from gateway.logs import log_request
from gateway.metrics import GatewayMetrics
from shared import sse
from shared.disconnect import cancel_on_disconnect
from shared.errors import ApiError, error_body, model_not_found
from shared.instance_auth import INSTANCE_SECRET_HEADER

log = logging.getLogger("gateway.upstream")

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
# Instance failures that say the server itself is gone (not merely slow).
_DEAD_ERRORS = (ConnectError, RemoteProtocolError, ReadError)


@dataclass(frozen=True)
class ProxyPolicy:
    connect_timeout: float = 2.0
    request_timeout: float = 600.0
    attempts: int = 3
    backoff: float = 0.05
    backoff_max: float = 1.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_connections: int = 512


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


@dataclass
class _Opened:
    instance: Instance
    response: HttpResponse
    first: bytes
    iterator: AsyncIterator[bytes] | None   # None: the whole body is in `first`


class UpstreamProxy:
    def __init__(self, registry: InstanceRegistry, balancer: Balancer, monitor: HealthMonitor,
                 metrics: GatewayMetrics, router: AutoRouter, policy: ProxyPolicy,
                 *, instance_secret: str | None = None) -> None:
        self.registry = registry
        self.balancer = balancer
        self.monitor = monitor
        self.metrics = metrics
        self.router = router
        self.policy = policy
        self._headers = {"content-type": "application/json", "accept-encoding": "identity"}
        if instance_secret:
            self._headers[INSTANCE_SECRET_HEADER] = instance_secret
        self._client: HttpClient | None = None

    async def start(self) -> None:
        # Our own small HTTP/1.1 client (gateway.http_client): httpx costs more than the
        # rest of the relay put together. Health probes still use httpx.
        self._client = HttpClient(connect_timeout=self.policy.connect_timeout, read_timeout=self.policy.request_timeout,
                                  max_connections=self.policy.max_connections, headers=self._headers.items())

    async def stop(self) -> None:
        if self._client:
            await self._client.aclose()

    # -- choosing ------------------------------------------------------------------------

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

    def pick(self, model: str, tried: set[str]) -> Instance:
        ready = self.registry.ready(model)
        if not ready:
            raise ApiError(503, f"No ready instance of '{model}' right now; try again shortly.",
                           code="no_ready_instance", headers={"Retry-After": "5"})
        fresh = [inst for inst in ready if inst.instance_id not in tried]
        return self.balancer.choose(fresh or ready)

    # -- the arena's entry point ---------------------------------------------------------

    async def stream_chat(self, body: dict[str, Any], info: dict[str, Any] | None = None, *,
                          private: bool = False) -> AsyncIterator[bytes]:
        """Raw SSE bytes of a streamed chat completion of ``body["model"]``.

        Raises `ApiError` before the first chunk (unknown model, no ready instance, every
        attempt failed); closing the generator closes the upstream request. ``info``, if given,
        receives ``model`` and ``instance_id`` once an instance answered. ``private`` (a battle
        side) keeps the request out of the per-model and per-instance counters.
        """
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        model = self.resolve_model(body)
        body = {**body, "model": model, "stream": True}
        call = _Call("/v1/chat/completions", model, True, private=private)
        opened = await self._open(call, body, None, stream=True)
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
        raw = await request.body()
        if len(raw) > self.policy.max_body_bytes:
            raise ApiError(413, f"The request body is larger than {self.policy.max_body_bytes} bytes.",
                           code="request_too_large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
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
        headers = {"x-arena-model": model, "x-arena-instance": opened.instance.instance_id}
        if opened.iterator is None:
            return self._complete(call, opened, headers)
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        return RelayResponse(self._relay(call, opened), status_code=opened.response.status_code,
                             headers=headers, media_type=opened.response.headers.get("content-type",
                                                                                    "text/event-stream"))

    def _complete(self, call: _Call, opened: _Opened, headers: dict[str, str]) -> Response:
        response, content = opened.response, opened.first
        opened.instance.outstanding -= 1
        call.status = response.status_code
        if response.status_code < 400:
            self._count_usage(call, content)
            media_type = response.headers.get("content-type", "application/json")
            result = Response(content, status_code=response.status_code, headers=headers, media_type=media_type)
        else:
            call.error = "upstream_error"
            result = _error_passthrough(response.status_code, content, headers)
            call.status = result.status_code
        self._finish(call)
        return result

    # -- attempts ------------------------------------------------------------------------

    async def _open(self, call: _Call, body: dict[str, Any], raw: bytes | None, *, stream: bool) -> _Opened:
        tried: set[str] = set()
        # The first attempt runs on its own: setting up tenacity costs more than relaying a
        # request. If it fails, tenacity takes over, and is handed that failure as its own
        # first attempt, so that back-off and the number of attempts are tenacity's throughout.
        failed: _Retryable | None = None
        try:
            return await self._attempt(call, body, raw, stream, tried)
        except _Retryable as exc:
            failed = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=wait_exponential(multiplier=self.policy.backoff, min=self.policy.backoff, max=self.policy.backoff_max),
            retry=retry_if_exception_type(_Retryable), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    if failed is not None:
                        first, failed = failed, None
                        raise first
                    return await self._attempt(call, body, raw, stream, tried)
        except _Retryable as exc:
            self.metrics.error(call.label, exc.reason)
            if exc.content is not None and exc.status == 503:
                headers = {"Retry-After": exc.headers.get("retry-after", "1")}
                raise ApiError(503, _upstream_message(exc.content) or exc.message, code="instances_busy",
                               headers=headers) from None
            raise ApiError(503, f"No instance of '{call.model}' could take the request: {exc.message}",
                           code="upstream_unavailable", headers={"Retry-After": "2"}) from None
        raise AssertionError("unreachable")

    async def _attempt(self, call: _Call, body: dict[str, Any], raw: bytes | None, stream: bool,
                       tried: set[str]) -> _Opened:
        assert self._client is not None, "UpstreamProxy.start() was not called"
        instance = self.pick(call.model, tried)
        tried.add(instance.instance_id)
        if call.attempts:
            self.metrics.retries.labels(call.label, "next_instance").inc()
        call.attempts += 1
        call.instance = instance
        if raw is None or instance.served_model:
            payload = body if not instance.served_model else {**body, "model": instance.served_model}
            content = json.dumps(payload).encode()
        else:
            content = raw
        instance.outstanding += 1
        call.count_on(instance, "requests_total")
        response: HttpResponse | None = None
        try:
            response = await self._client.request("POST", instance.url + call.endpoint, content)
            if response.status_code == 503:
                content = await response.aread()
                response.close()
                self.monitor.probe_soon(instance)
                raise _Retryable("upstream_503", f"instance {instance.instance_id} answered 503",
                                 content=content, headers=dict(response.headers))
            if stream and response.status_code == 200:
                try:
                    first = await response.__anext__()
                except StopAsyncIteration:
                    first = b""
                call.ttft = time.perf_counter() - call.started
                return _Opened(instance, response, first, response)
            content = await response.aread()
            response.close()
            return _Opened(instance, response, content, None)
        except HttpError as exc:
            if response is not None:
                response.close()
            instance.outstanding -= 1
            call.count_on(instance, "errors_total")
            reason = _error_kind(exc)
            if isinstance(exc, _DEAD_ERRORS):
                self.monitor.mark_failed(instance, f"{type(exc).__name__} on a request")
            raise _Retryable(reason, f"{type(exc).__name__} from instance {instance.instance_id}") from exc
        except BaseException:
            if response is not None:
                response.close()
            instance.outstanding -= 1
            raise

    async def _relay(self, call: _Call, opened: _Opened) -> AsyncIterator[bytes]:
        instance, response = opened.instance, opened.response
        call.status = response.status_code
        try:
            if opened.first:
                self._count_chunk(call, opened.first)
                yield opened.first
            assert opened.iterator is not None
            async for chunk in opened.iterator:
                self._count_chunk(call, chunk)
                yield chunk
        except HttpError as exc:
            call.count_on(instance, "errors_total")
            call.error = "upstream_stream_broken"
            self.metrics.error(call.label, call.error)
            if isinstance(exc, _DEAD_ERRORS):
                self.monitor.mark_failed(instance, f"{type(exc).__name__} during a stream")
            error = ApiError(502, f"The instance serving '{call.model}' broke off the stream "
                                  f"({type(exc).__name__}); the answer is incomplete.",
                             code="upstream_stream_broken")
            yield b"\n\n" + sse.error_event(error.body())
        except (asyncio.CancelledError, GeneratorExit):
            call.error = call.error or "client_disconnected"
            raise
        finally:
            response.close()
            instance.outstanding -= 1
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
        log_request(endpoint=call.endpoint, model=call.model, instance=instance_id, status=call.status,
                    stream=call.stream, attempts=call.attempts, ms=round(elapsed * 1000, 2),
                    ttft_ms=None if call.ttft is None else round(call.ttft * 1000, 2),
                    completion_tokens=completion, error=call.error, key=call.key_id)


class RelayResponse(StreamingResponse):
    """A streaming response that notices a client disconnect at once, whatever the ASGI
    version, and then cancels the relay (whose `finally` closes the upstream request).

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
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()


async def _unless_disconnected(receive: Receive, work: Any) -> Any:
    """Run `work` unless the client disconnects first (then cancel it and return None)."""
    async with cancel_on_disconnect(receive):
        return await work
    return None


def _error_kind(exc: HttpError) -> str:
    if isinstance(exc, ConnectTimeout):
        return "upstream_connect_timeout"
    if isinstance(exc, ConnectError):
        return "upstream_connect_error"
    if isinstance(exc, TimeoutException):
        return "upstream_timeout"
    return "upstream_broken"


def _upstream_message(content: bytes) -> str | None:
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(data.get("detail"), str):
            return data["detail"]
    return None


def _error_passthrough(status: int, content: bytes, headers: dict[str, str]) -> Response:
    """An instance's error answer, in OpenAI's shape whatever shape it came in."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return Response(content, status_code=status, headers=headers, media_type="application/json")
    message = _upstream_message(content) or f"The instance answered {status}."
    if status >= 500:
        status = 502
    body = error_body(message, type="upstream_error" if status >= 500 else "invalid_request_error",
                      code="upstream_error")
    return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/json")
