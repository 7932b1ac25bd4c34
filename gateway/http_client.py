"""A small pooled HTTP/1.1 client on asyncio, for the gateway's hot path (`UpstreamProxy`).

httpx costs the gateway more than a millisecond per request on a small machine (its layers,
anyio, h11); this client does only what relaying a completion needs: one request written in
one go, a keep-alive pool per origin, the response head parsed at once, and the body read as
Content-Length, chunked or until close, handed on as it arrives. Health probes and everything
else keep using httpx.

Safety rules:

- A connection goes back to the pool only when its response was read to the end, the server
  did not ask to close, and nothing unexpected followed the body. Anything else (a cancelled
  request, a response not read to the end, a malformed head or chunk, bytes after the body)
  closes it.
- An idle connection is not reused once the server closed it, or after `idle_timeout`
  (shorter than the usual server keep-alive, so a server rarely closes one under our feet).
  If a reused connection is found closed before a single byte of the answer came back, the
  request is sent again on another connection (a fresh one, if no other idle one is left):
  the server closed it as idle and cannot have answered.
- Timeouts: `connect_timeout` for the TCP (and TLS) connection, `read_timeout` for the head of
  the answer and for each wait for more of its body.

Not supported, unlike httpx: HTTP proxies (HTTP_PROXY and the like are ignored), HTTP/2,
redirects, cookies, compressed bodies (the gateway asks for identity encoding).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Iterable
from urllib.parse import urlsplit

__all__ = ["HttpClient", "HttpResponse", "HttpError", "ConnectError", "ConnectTimeout", "ReadTimeout",
           "TimeoutException", "ReadError", "RemoteProtocolError", "ChunkedDecoder"]

_MAX_HEAD = 64 * 1024          # bytes of a response head
_MAX_CHUNK_LINE = 4 * 1024     # bytes of a chunk-size line or a trailer line
_HIGH_WATER = 256 * 1024       # pause reading the socket above this many buffered bytes


class HttpError(Exception):
    """Any failure of a request (the names follow httpx's)."""


class ConnectError(HttpError):
    pass


class TimeoutException(HttpError):
    pass


class ConnectTimeout(TimeoutException):
    pass


class ReadTimeout(TimeoutException):
    pass


class ReadError(HttpError):
    """The connection failed (reset, broken pipe) while the answer was read."""


class RemoteProtocolError(HttpError):
    """The server broke HTTP: closed early, or sent something that does not parse."""


# -- chunked transfer decoding ---------------------------------------------------------------

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Incremental decoder of a chunked body: `feed` bytes as they come, in pieces of any size.

    `feed` returns the payload bytes decoded so far; `done` tells that the last chunk and the
    trailer went by; `extra` holds any bytes that came after the end (for the caller to judge).
    """

    __slots__ = ("state", "remaining", "line", "done", "extra")

    def __init__(self) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = b""
        self.done = False
        self.extra = b""

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self.state
            if state == _DATA:
                take = min(self.remaining, end - pos)
                out.append(data[pos:pos + take])
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _DATA_END
            elif state == _SIZE or state == _TRAILER or state == _DATA_END:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    self.line += data[pos:]
                    if len(self.line) > _MAX_CHUNK_LINE:
                        raise RemoteProtocolError("chunk line too long")
                    pos = end
                    break
                line = self.line + data[pos:nl + 1]
                self.line = b""
                pos = nl + 1
                if len(line) > _MAX_CHUNK_LINE:
                    raise RemoteProtocolError("chunk line too long")
                if not line.endswith(b"\r\n"):
                    raise RemoteProtocolError("chunk line without CRLF")
                if state == _DATA_END:
                    if line != b"\r\n":
                        raise RemoteProtocolError("chunk data longer than its size")
                    self.state = _SIZE
                elif state == _SIZE:
                    size_text = line[:-2].split(b";", 1)[0].strip()
                    if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                        raise RemoteProtocolError(f"bad chunk size {size_text[:20]!r}")
                    size = int(size_text, 16)
                    if size:
                        self.remaining = size
                        self.state = _DATA
                    else:
                        self.state = _TRAILER
                else:  # trailer lines, then an empty line
                    if line == b"\r\n":
                        self.state = _DONE
                        self.done = True
            else:  # _DONE: whatever follows is not ours
                self.extra += data[pos:]
                pos = end
        return out[0] if len(out) == 1 else b"".join(out)


# -- connections -----------------------------------------------------------------------------

class _Connection(asyncio.Protocol):
    """One TCP connection: a receive buffer filled by the loop, read by one request at a time."""

    def __init__(self, pool: "_Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False       # the server closed it, or it failed
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None
        self.paused = False
        self.idle_since = 0.0
        self.answered = False     # the head of the current request's answer came

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # used by requests

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        transport = self.transport
        return not self.closed and not self.buffer and transport is not None and not transport.is_closing()

    async def wait(self, timeout: float) -> None:
        """Wait until more bytes came, or the connection closed; ReadTimeout after `timeout`."""
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
        if waiter.result() is _TIMED_OUT:
            raise ReadTimeout(f"no data from {self.pool.origin} for {timeout:g} s")

    def take(self, limit: int = -1) -> bytes:
        buffer = self.buffer
        if limit < 0 or limit >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:limit])
            del buffer[:limit]
        if self.paused and len(buffer) <= _HIGH_WATER // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def failure(self, what: str) -> HttpError:
        """The exception for a connection that closed while `what` was expected."""
        if isinstance(self.error, OSError):
            return ReadError(f"{type(self.error).__name__} from {self.pool.origin} while reading {what}")
        return RemoteProtocolError(f"{self.pool.origin} closed the connection before the end of {what}")


_TIMED_OUT = object()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


class _Pool:
    """The connections to one origin: idle ones kept for reuse, at most `limit` in use at once
    (a request waits for a slot; idle connections only exist in place of used ones, so the
    connections open never exceed the limit either)."""

    def __init__(self, client: "HttpClient", scheme: str, host: str, port: int) -> None:
        self.client = client
        self.host, self.port = host, port
        self.ssl = scheme == "https"
        self.origin = f"{scheme}://{host}:{port}"
        default_port = 443 if self.ssl else 80
        shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
        self.host_header = shown if port == default_port else f"{shown}:{port}"
        self.idle: deque[_Connection] = deque()
        self.active = 0
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire_slot(self) -> None:
        if self.active < self.client.max_connections and not self.waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # a released slot is handed over: `active` still counts it
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release_slot()  # handed over just as we were cancelled: pass it on
            else:
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active -= 1

    def take_idle(self) -> _Connection | None:
        deadline = time.monotonic() - self.client.idle_timeout
        while self.idle:
            conn = self.idle.pop()  # the most recently used
            if conn.reusable() and conn.idle_since > deadline:
                return conn
            conn.close()
        return None

    async def connect(self) -> _Connection:
        client = self.client
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port,
                                       ssl=client.ssl_context() if self.ssl else None,
                                       server_hostname=self.host if self.ssl else None),
                client.connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"connecting to {self.origin} took over {client.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {self.origin}: {exc}") from exc
        return conn

    def release(self, conn: _Connection, reuse: bool) -> None:
        """A request is done with `conn` (and its slot); keep it for the next one if it can be."""
        if reuse and not self.client.closed and conn.reusable():
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.close()
        self.release_slot()

    def close(self) -> None:
        while self.idle:
            self.idle.popleft().close()


# -- responses -------------------------------------------------------------------------------

_FIXED, _CHUNKED, _UNTIL_CLOSE, _EMPTY = range(4)


class HttpResponse:
    """A response whose head was read. Read the body with `aread()` or `async for` (or
    `aiter_raw()`); `aclose()` (or `close()`) when done. A body read to the end hands the
    connection back to the pool by itself; closing a response before that closes it."""

    def __init__(self, pool: _Pool, conn: _Connection, status: int, reason: str,
                 headers: dict[str, str], keep_alive: bool, framing: int, length: int) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers
        self._pool = pool
        self._conn: _Connection | None = conn
        self._keep_alive = keep_alive
        self._framing = framing
        self._remaining = length
        self._decoder = ChunkedDecoder() if framing == _CHUNKED else None
        self._timeout = pool.client.read_timeout
        self.is_closed = False
        self.body_complete = False
        if framing == _EMPTY or (framing == _FIXED and length == 0):
            self._complete()

    def __aiter__(self) -> "HttpResponse":
        return self

    def aiter_raw(self) -> "HttpResponse":
        return self

    async def __anext__(self) -> bytes:
        while True:
            conn = self._conn
            if conn is None:
                if self.body_complete:
                    raise StopAsyncIteration
                raise RemoteProtocolError("the response was closed before its body was read")
            if conn.buffer:
                data = self._decode(conn)
                if data:
                    return data
                continue
            if conn.closed:
                if self._framing == _UNTIL_CLOSE and not isinstance(conn.error, OSError):
                    self._complete()
                    continue
                self._abort()
                raise conn.failure("the response body")
            try:
                await conn.wait(self._timeout)
            except BaseException:
                self._abort()
                raise

    def _decode(self, conn: _Connection) -> bytes:
        framing = self._framing
        try:
            if framing == _FIXED:
                data = conn.take(self._remaining)
                self._remaining -= len(data)
                if not self._remaining:
                    self._complete()
                return data
            if framing == _CHUNKED:
                decoder = self._decoder
                assert decoder is not None
                data = decoder.feed(conn.take())
                if decoder.done:
                    if decoder.extra:  # bytes after the body: do not trust this connection again
                        self._keep_alive = False
                    self._complete()
                return data
            return conn.take()  # until close
        except BaseException:
            self._abort()
            raise

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _complete(self) -> None:
        self.body_complete = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        self._pool.release(conn, self._keep_alive and self._framing != _UNTIL_CLOSE)

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, False)

    def close(self) -> None:
        """Done with this response: a connection whose body was not read to the end is closed."""
        self.is_closed = True
        self._abort()

    async def aclose(self) -> None:
        self.close()


# -- the client ------------------------------------------------------------------------------

class HttpClient:
    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 600.0, max_connections: int = 512,
                 idle_timeout: float = 4.0, headers: Iterable[tuple[str, str]] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._default_headers = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._origins: dict[str, tuple[_Pool, str]] = {}
        self._ssl = ssl_context  # default: httpx's (see ssl_context())
        self.closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:  # the very checks httpx makes (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR)
            import httpx
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _target(self, url: str) -> tuple[_Pool, str]:
        known = self._origins.get(url)
        if known is not None:
            return known
        self._prune()  # a new URL: a good time to forget pools no longer used
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self, parts.scheme, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if len(self._origins) > 4096:  # URLs are few (instances x endpoints); stay bounded anyway
            self._origins.clear()
        self._origins[url] = (pool, target)
        return pool, target

    def _prune(self) -> None:
        """Drop pools of origins that have nothing in use and nothing fresh (instances come
        and go; their pools should not pile up)."""
        deadline = time.monotonic() - self.idle_timeout
        for key, pool in list(self._pools.items()):
            while pool.idle and (pool.idle[0].idle_since <= deadline or not pool.idle[0].reusable()):
                pool.idle.popleft().close()
            if not pool.idle and not pool.active and not pool.waiters:
                del self._pools[key]
                self._origins = {url: target for url, target in self._origins.items() if target[0] is not pool}

    async def request(self, method: str, url: str, content: bytes = b"",
                      headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send a request and read the head of its answer (not its body)."""
        if self.closed:
            raise RuntimeError("the client is closed")
        pool, target = self._target(url)
        head = (f"{method} {target} HTTP/1.1\r\nhost: {pool.host_header}\r\n{self._default_headers}"
                + "".join(f"{name}: {value}\r\n" for name, value in headers)
                + f"content-length: {len(content)}\r\n\r\n").encode("latin-1")
        payload = head + content if len(content) < 65536 else None
        await pool.acquire_slot()
        conn: _Connection | None = None
        try:
            while True:
                conn = pool.take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await pool.connect()
                transport = conn.transport
                conn.answered = False
                if transport is None or transport.is_closing():  # closed before we could write
                    raise conn.failure("the response head")
                try:
                    if payload is not None:
                        transport.write(payload)
                    else:
                        transport.writelines((head, content))
                except (RuntimeError, OSError) as exc:  # uvloop: the handle closed under us
                    raise RemoteProtocolError(f"cannot write to {pool.origin}: {exc}") from exc
                try:
                    response = await self._read_head(pool, conn, method)
                except (RemoteProtocolError, ReadError):
                    # A kept-alive connection the server closed before we wrote: nothing came back,
                    # so nothing was answered; try once more on a new connection.
                    if reused and conn.closed and not conn.buffer and not conn.answered:
                        conn.close()
                        conn = None
                        continue
                    raise
                conn = None  # the response owns it now
                return response
        except BaseException:
            if conn is not None:
                conn.close()
            pool.release_slot()
            raise

    async def _read_head(self, pool: _Pool, conn: _Connection, method: str) -> HttpResponse:
        while True:
            buffer = conn.buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise RemoteProtocolError(f"{pool.origin} sent a response head over {_MAX_HEAD} bytes")
                if conn.closed:
                    raise conn.failure("the response head")
                await conn.wait(self.read_timeout)
                continue
            conn.answered = True
            head = bytes(buffer[:end])
            del buffer[:end + 4]
            status, reason, headers, version = _parse_head(head, pool.origin)
            if 100 <= status < 200:
                if status == 101:
                    raise RemoteProtocolError(f"{pool.origin} switched protocols")
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            keep_alive = version == "HTTP/1.1"
            connection = headers.get("connection", "").lower()
            if "close" in connection:
                keep_alive = False
            elif "keep-alive" in connection:
                keep_alive = True
            length = 0
            if method == "HEAD" or status in (204, 304):
                framing = _EMPTY
            elif "transfer-encoding" in headers:
                codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
                if codings[-1] != "chunked":
                    framing = _UNTIL_CLOSE
                    keep_alive = False
                else:
                    framing = _CHUNKED
                if "content-length" in headers:  # both: chunked wins, but do not trust the connection
                    keep_alive = False
            elif "content-length" in headers:
                values = {v.strip() for v in headers["content-length"].split(",")}
                if len(values) != 1 or not next(iter(values)).isdigit():
                    raise RemoteProtocolError(f"{pool.origin} sent a bad Content-Length")
                framing, length = _FIXED, int(next(iter(values)))
            else:
                framing = _UNTIL_CLOSE
                keep_alive = False
            return HttpResponse(pool, conn, status, reason, headers, keep_alive, framing, length)

    async def aclose(self) -> None:
        self.closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._origins.clear()


def _parse_head(head: bytes, origin: str) -> tuple[int, str, dict[str, str], str]:
    try:
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise ValueError(lines[0][:80])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or " " in name:
                raise ValueError(line[:80])
            name = name.lower()
            value = value.strip()
            if name in headers:  # repeated: comma-joined, as HTTP allows
                headers[name] += ", " + value
            else:
                headers[name] = value
        return int(code), reason, headers, version
    except ValueError as exc:
        raise RemoteProtocolError(f"{origin} sent a malformed response head: {exc}") from None
