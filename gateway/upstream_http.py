"""The gateway's HTTP client towards instances: aiohttp's client (llhttp parser, pooled
keep-alive), configured for a hostile or broken instance.

- Times: `connect_timeout` bounds both the wait for a pooled connection and the TCP (TLS)
  connect; `request_timeout` is the total deadline of a request, its body included (a
  trickling instance cannot hold a request longer), and also the longest silence between two
  reads.
- Counts: aiohttp skips informational (1xx) heads in a loop bounded only by that deadline, so an
  instance could send 100 Continue heads for ten minutes, each parsed and dropped, holding the
  request and a share of the gateway's CPU; `BoundedResponse` refuses the answer after
  `MAX_INFORMATIONAL_HEADS` of them.
- Sizes: a non-streamed answer is read up to `max_response_bytes` (`read_capped`); a head's
  lines and fields are capped by aiohttp (8 KiB each).
- The answer must be HTTP/1.x with a body in identity encoding; a malformed head or length
  (``Content-Length: ²``) is a protocol error, which the proxy treats as a failed instance.
- No redirects, no proxies from the environment, no cookies: the instance secret goes to the
  instance's URL only.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["UpstreamHttp", "UpstreamFailure", "read_capped", "MAX_INFORMATIONAL_HEADS"]

#: Informational heads (100 Continue, 102 Processing, 103 Early Hints) accepted before the final
#: head of one answer. The model service sends none; a real server sends one or two.
MAX_INFORMATIONAL_HEADS = 16


class UpstreamFailure(Exception):
    """One exchange with an instance failed. `kind` names it for metrics and logs; `dead`
    says the instance itself looks gone (refused, reset, broken HTTP), not merely slow."""

    def __init__(self, kind: str, message: str, *, dead: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.dead = dead


@dataclass(frozen=True)
class HttpLimits:
    connect_timeout: float = 2.0
    request_timeout: float = 600.0
    max_connections: int = 512
    max_response_bytes: int = 8 * 1024 * 1024


def classify(exc: BaseException) -> UpstreamFailure:
    """An aiohttp (or asyncio) failure as an `UpstreamFailure`."""
    if isinstance(exc, UpstreamFailure):
        return exc
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamFailure("upstream_connect_timeout", f"{name}: no connection in time", dead=False)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamFailure("upstream_timeout", f"{name}: the instance took too long", dead=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure("upstream_connect_error", f"{name}: {exc}", dead=True)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                        aiohttp.ClientResponseError, ConnectionError)):
        return UpstreamFailure("upstream_broken", f"{name}: {exc}", dead=True)
    return UpstreamFailure("upstream_broken", f"{name}: {exc}", dead=False)


#: What `classify` turns into an `UpstreamFailure` (everything else is a bug and propagates).
CLIENT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, UpstreamFailure)


class BoundedResponse(aiohttp.ClientResponse):
    """aiohttp's response, counting the informational heads it skips before the final one.

    aiohttp reads heads with its connection protocol's `read()` until one is not 1xx; this
    response counts them by wrapping that `read` for the time of `start` only (the protocol
    is a plain object, one per connection, used by one response at a time)."""

    async def start(self, connection: Any) -> "BoundedResponse":
        protocol = connection.protocol
        read = protocol.read
        informational = 0

        async def counted_read() -> Any:
            nonlocal informational
            message, payload = await read()
            if 100 <= message.code < 200 and message.code != 101:
                informational += 1
                if informational > MAX_INFORMATIONAL_HEADS:
                    raise UpstreamFailure("upstream_broken", f"the instance sent more than "
                                          f"{MAX_INFORMATIONAL_HEADS} informational (1xx) heads", dead=True)
            return message, payload

        protocol.read = counted_read
        try:
            await super().start(connection)
        finally:
            del protocol.read  # the protocol's own method again, for the connection's next answer
        return self


#: With tracing on: what the gateway is attempting (model, instance id, attempt number), set by
#: the proxy before each attempt and put on that attempt's client span by `name_attempt_span`.
ATTEMPT_ATTRIBUTES: ContextVar[dict[str, Any] | None] = ContextVar("arena_upstream_attempt", default=None)


def name_attempt_span(span: Any, params: aiohttp.TraceRequestStartParams) -> None:
    """The aiohttp instrumentation's request hook: one attempt's span, named and described."""
    span.update_name("upstream attempt")
    if attributes := ATTEMPT_ATTRIBUTES.get():
        span.set_attributes(attributes)


def record_attempt_status(span: Any, params: Any) -> None:
    """Its response hook: the instance's status, or the failure that stood for one."""
    response = getattr(params, "response", None)
    status = response.status if response is not None else type(getattr(params, "exception", None)).__name__
    span.set_attribute("arena.attempt.status", status)


class UpstreamHttp:
    def __init__(self, limits: HttpLimits, headers: dict[str, str], trace_configs: list[Any] | None = None) -> None:
        self.limits = limits
        self.headers = headers
        self.trace_configs = trace_configs or []  # OpenTelemetry's, when tracing is on
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        limits = self.limits
        connector = aiohttp.TCPConnector(limit=limits.max_connections, limit_per_host=0, keepalive_timeout=15.0,
                                         enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(total=limits.request_timeout, connect=limits.connect_timeout,
                                        sock_connect=limits.connect_timeout, sock_read=limits.request_timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers,
                                             auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                             skip_auto_headers=("User-Agent",), raise_for_status=False,
                                             response_class=BoundedResponse, trace_configs=self.trace_configs or None)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    def post(self, url: str, content: bytes) -> aiohttp.client._RequestContextManager:
        assert self.session is not None, "UpstreamHttp.start() was not called"
        return self.session.post(url, data=content, allow_redirects=False)


def check_head(response: aiohttp.ClientResponse) -> None:
    """Refuse an answer the gateway could not relay faithfully."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UpstreamFailure("upstream_broken", f"the instance answered in {encoding!r} encoding", dead=False)


async def read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, or `UpstreamFailure` once it passes `cap` bytes."""
    if response.content_length is not None and response.content_length > cap:
        raise UpstreamFailure("upstream_too_large", f"the instance announced {response.content_length} bytes, "
                                                    f"above the limit of {cap}", dead=False)
    parts: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > cap:
            raise UpstreamFailure("upstream_too_large", f"the instance sent more than {cap} bytes", dead=False)
        parts.append(chunk)
    return b"".join(parts)
