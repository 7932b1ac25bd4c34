"""gateway.http_client against real TCP servers on 127.0.0.1 that answer exactly the bytes a
test scripts: framing, keep-alive reuse, servers that close, timeouts, errors, cancellation."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import ssl
import subprocess
from contextlib import closing
from typing import Awaitable, Callable

import pytest

from gateway.http_client import (ChunkedDecoder, ConnectError, ConnectTimeout, HttpClient, ReadTimeout,
                                 RemoteProtocolError)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]


class ScriptedServer:
    """Accepts connections; for each request (head and Content-Length body) calls `handler`."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[dict] = []
        self.closed_by_client = 0
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "ScriptedServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.closed_by_client += 1
                    return
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                request = {"line": lines[0], "headers": headers, "body": body, "connection": self.connections}
                self.requests.append(request)
                await self.handler(reader, writer, request)
                if writer.is_closing():
                    return
        finally:
            writer.close()


def respond(body: bytes, status: str = "200 OK", extra: bytes = b"") -> Handler:
    async def handler(reader, writer, request):
        writer.write(b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: text/plain\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)
        await writer.drain()
    return handler


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def test_content_length_response_and_keep_alive_reuse():
    async with ScriptedServer(respond(b"hello world")) as server:
        client = HttpClient(headers=[("x-secret", "s3")])
        for i in range(3):
            response = await client.request("POST", server.url + "/v1/chat/completions", b'{"n": %d}' % i)
            assert response.status_code == 200 and response.headers["content-type"] == "text/plain"
            assert await response.aread() == b"hello world"
        await client.aclose()
    assert server.connections == 1 and len(server.requests) == 3
    first = server.requests[0]
    assert first["line"] == "POST /v1/chat/completions HTTP/1.1"
    assert first["headers"]["host"] == f"127.0.0.1:{server.port}" and first["headers"]["x-secret"] == "s3"
    assert [r["body"] for r in server.requests] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']


@pytest.mark.parametrize("seed", range(4))
async def test_chunked_body_across_arbitrary_read_boundaries(seed):
    pieces = [b"data: {\"i\": %d}\n\n" % i for i in range(40)] + [b"x" * 70000, b"data: [DONE]\n\n"]
    wire = chunked(pieces)
    rng = random.Random(seed)

    async def handler(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        pos = 0
        while pos < len(wire):  # the body in random slices: cut inside sizes, CRLFs and data
            step = rng.choice([1, 2, 3, 5, 7, 64, 1000, 9000])
            writer.write(wire[pos:pos + step])
            await writer.drain()
            pos += step
            if rng.random() < 0.2:
                await asyncio.sleep(0.001)

    async with ScriptedServer(handler) as server:
        client = HttpClient()
        for _ in range(2):  # the same connection, read to the end, serves the next request
            response = await client.request("POST", server.url + "/s")
            assert b"".join([piece async for piece in response]) == b"".join(pieces)
        await client.aclose()
    assert server.connections == 1


def test_chunked_decoder_every_split_and_byte_by_byte():
    pieces = [b"hello", b"", b" wor", b"ld" * 20]
    wire = b"5;ext=1\r\nhello\r\n4\r\n wor\r\n28\r\n" + b"ld" * 20 + b"\r\n0\r\nx-trailer: 1\r\n\r\n"
    expected = b"".join(pieces)
    for cut in range(len(wire) + 1):
        decoder = ChunkedDecoder()
        out = decoder.feed(wire[:cut]) + decoder.feed(wire[cut:])
        assert out == expected and decoder.done and not decoder.extra
    decoder = ChunkedDecoder()
    assert b"".join(decoder.feed(wire[i:i + 1]) for i in range(len(wire))) == expected and decoder.done
    decoder = ChunkedDecoder()
    decoder.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1")
    assert decoder.done and decoder.extra == b"HTTP/1.1"
    for bad in (b"zz\r\nabc\r\n", b"3\r\nabcd\r\n", b"3\nabc\r\n", b"-1\r\n"):
        with pytest.raises(RemoteProtocolError):
            ChunkedDecoder().feed(bad)


async def test_streamed_pieces_arrive_as_they_are_sent():
    gate = asyncio.Event()

    async def handler(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"5\r\nfirst\r\n")
        await writer.drain()
        await gate.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with ScriptedServer(handler) as server:
        client = HttpClient()
        response = await client.request("POST", server.url + "/s")
        assert await response.__anext__() == b"first"  # before the server sends the rest
        gate.set()
        assert [piece async for piece in response] == [b"second"]
        await client.aclose()


async def test_server_closing_the_connection():
    # `Connection: close`, and a body that runs until the close: both end cleanly, never reused.
    async def closing_handler(reader, writer, request):
        if request["body"] == b"eof":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with ScriptedServer(closing_handler) as server:
        client = HttpClient()
        for body in (b"", b"eof", b""):
            response = await client.request("POST", server.url + "/", body)
            assert await response.aread() == (b"all of it" if body else b"ok")
        await client.aclose()
    assert server.connections == 3


async def test_idle_connection_closed_by_the_server_is_replaced():
    # The server closes each kept-alive connection once idle; the next request, on a stale
    # connection or a fresh one, must not fail.
    async def handler(reader, writer, request):
        await respond(b"ok")(reader, writer, request)
        await asyncio.sleep(0.05)
        writer.close()

    async with ScriptedServer(handler) as server:
        client = HttpClient()
        for _ in range(3):
            response = await client.request("POST", server.url + "/")
            assert await response.aread() == b"ok"
            await asyncio.sleep(0.1)
        await client.aclose()
    assert server.connections == 3

    # A connection idle for longer than idle_timeout is not reused at all.
    async with ScriptedServer(respond(b"ok")) as server:
        client = HttpClient(idle_timeout=0.05)
        for _ in range(2):
            assert await (await client.request("POST", server.url + "/")).aread() == b"ok"
            await asyncio.sleep(0.1)
        await client.aclose()
    assert server.connections == 2


async def test_kept_alive_connection_closed_as_the_request_arrives_is_retried_once():
    # The race a keep-alive pool cannot see coming: the server drops a reused connection on
    # receiving the request, without a byte of answer. Sent again on a new connection.
    async def handler(reader, writer, request):
        if len(server.requests) == 2:
            writer.close()
            return
        await respond(b"ok")(reader, writer, request)

    async with ScriptedServer(handler) as server:
        client = HttpClient()
        for _ in range(2):
            assert await (await client.request("POST", server.url + "/", b"x")).aread() == b"ok"
        await client.aclose()
    assert server.connections == 2 and len(server.requests) == 3

    # On a new connection the same thing is an error (the server is not answering at all).
    async def hang_up(reader, writer, request):
        writer.close()

    async with ScriptedServer(hang_up) as server:
        client = HttpClient()
        with pytest.raises(RemoteProtocolError):
            await client.request("POST", server.url + "/")
        await client.aclose()
    assert server.connections == 1


async def test_server_dying_mid_answer():
    async def half_head(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-len")
        await writer.drain()
        writer.close()

    async def half_body(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()
        writer.close()

    async def half_chunks(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    for handler in (half_head, half_body, half_chunks):
        async with ScriptedServer(handler) as server:
            client = HttpClient()
            with pytest.raises(RemoteProtocolError):
                response = await client.request("POST", server.url + "/")
                await response.aread()
            await client.aclose()


async def test_http_errors_are_answers_and_garbage_is_a_protocol_error():
    async with ScriptedServer(respond(b'{"error": "nope"}', "503 Service Unavailable",
                                      b"retry-after: 1\r\n")) as server:
        client = HttpClient()
        response = await client.request("POST", server.url + "/")
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert await response.aread() == b'{"error": "nope"}'
        await client.aclose()

    async def garbage(reader, writer, request):
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    async def bad_chunk(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nnot-hex\r\n")
        await writer.drain()

    for handler in (garbage, bad_chunk):
        async with ScriptedServer(handler) as server:
            client = HttpClient()
            for _ in range(2):  # the doubtful connection is not reused
                with pytest.raises(RemoteProtocolError):
                    response = await client.request("POST", server.url + "/")
                    await response.aread()
            await client.aclose()
        assert server.connections == 2


async def test_bytes_after_the_body_retire_the_connection():
    async def extra(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
        await writer.drain()

    async with ScriptedServer(extra) as server:
        client = HttpClient()
        for _ in range(2):
            assert await (await client.request("POST", server.url + "/")).aread() == b"ok"
            await asyncio.sleep(0.05)
        await client.aclose()
    assert server.connections == 2


async def test_read_timeouts_for_the_head_and_between_pieces():
    async def silent(reader, writer, request):
        await asyncio.sleep(5)

    async def stalls(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with ScriptedServer(silent) as server:
        client = HttpClient(read_timeout=0.2)
        with pytest.raises(ReadTimeout):
            await client.request("POST", server.url + "/")
        await client.aclose()
    async with ScriptedServer(stalls) as server:
        client = HttpClient(read_timeout=0.2)
        response = await client.request("POST", server.url + "/")
        assert await response.__anext__() == b"hi"
        with pytest.raises(ReadTimeout):
            await response.__anext__()
        await client.aclose()


async def test_connect_refused_and_connect_timeout():
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        client = HttpClient(connect_timeout=1.0)
        with pytest.raises(ConnectError):
            await client.request("POST", f"http://127.0.0.1:{port}/")
        await client.aclose()

    # A listener that never accepts, with its backlog full: new connections hang in SYN.
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        client = HttpClient(connect_timeout=0.3)
        with pytest.raises(ConnectTimeout):
            await client.request("POST", f"http://127.0.0.1:{port}/")
        await client.aclose()
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_cancel_and_early_close_close_the_connection():
    async def endless(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"4\r\ntick\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with ScriptedServer(endless) as server:
        client = HttpClient(max_connections=1)
        response = await client.request("POST", server.url + "/")
        assert await response.__anext__() == b"tick"
        task = asyncio.ensure_future(response.aread())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the slot came back (max_connections=1), on a new connection
        response = await client.request("POST", server.url + "/")
        assert await response.__anext__() == b"tick"
        await response.aclose()  # closed early: not reused
        response = await client.request("POST", server.url + "/")
        await response.aclose()
        await client.aclose()
        for _ in range(50):
            if server.closed_by_client >= 2:
                break
            await asyncio.sleep(0.02)
    assert server.connections == 3


async def test_cancelled_while_waiting_for_the_head():
    async def slow(reader, writer, request):
        await asyncio.sleep(0.3)
        await respond(b"late")(reader, writer, request)

    async with ScriptedServer(slow) as server:
        client = HttpClient(max_connections=1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.request("POST", server.url + "/"), 0.05)
        response = await client.request("POST", server.url + "/")  # the slot was given back
        assert await response.aread() == b"late"
        await client.aclose()
    assert server.connections == 2


async def test_connection_limit_queues_requests():
    async def slowish(reader, writer, request):
        await asyncio.sleep(0.05)
        await respond(b"ok")(reader, writer, request)

    async with ScriptedServer(slowish) as server:
        client = HttpClient(max_connections=2)

        async def one() -> bytes:
            return await (await client.request("POST", server.url + "/")).aread()

        assert await asyncio.gather(*(one() for _ in range(8))) == [b"ok"] * 8
        await client.aclose()
    assert server.connections == 2


@pytest.fixture
def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_https_with_keep_alive(self_signed):
    cert, key = self_signed
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader, writer, request):
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked([b"secure", b" hello"])[:-5])
        await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with ScriptedServer(handler, tls=server_tls) as server:
        client = HttpClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            response = await client.request("POST", server.url + "/v1/chat/completions", b"{}")
            assert await response.aread() == b"secure hello"
        await client.aclose()
        assert server.connections == 1
        untrusting = HttpClient()  # certifi's CAs do not know this certificate
        with pytest.raises(ConnectError):
            await untrusting.request("POST", server.url + "/")
        await untrusting.aclose()
