"""The gateway's HTTP client towards instances: aiohttp's client (llhttp parser, pooled
keep-alive), configured for a hostile or broken instance.

- Times: `connect_timeout` bounds both the wait for a pooled connection and the TCP (TLS)
  connect; `request_timeout` is the total deadline of a request, its body included (a
  trickling instance cannot hold a request longer), and also the longest silence between two
  reads. Informational (1xx) heads are skipped by aiohttp within that same deadline.
- Sizes: a non-streamed answer is read up to `max_response_bytes` (`read_capped`); a head's
  lines and fields are capped by aiohttp (8 KiB each).
- The answer must be HTTP/1.x with a body in identity encoding; a malformed head or length
  (``Content-Length: ²``) is a protocol error, which the proxy treats as a failed instance.
- No redirects, no proxies from the environment, no cookies: the instance secret goes to the
  instance's URL only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

__all__ = ["UpstreamHttp", "UpstreamFailure", "read_capped"]


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


class UpstreamHttp:
    def __init__(self, limits: HttpLimits, headers: dict[str, str]) -> None:
        self.limits = limits
        self.headers = headers
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        limits = self.limits
        connector = aiohttp.TCPConnector(limit=limits.max_connections, limit_per_host=0, keepalive_timeout=15.0,
                                         enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(total=limits.request_timeout, connect=limits.connect_timeout,
                                        sock_connect=limits.connect_timeout, sock_read=limits.request_timeout)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers,
                                             auto_decompress=False, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(),
                                             skip_auto_headers=("User-Agent",), raise_for_status=False)

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
