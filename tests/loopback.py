"""The tests' one loopback HTTP server: a `http.server` handler served on a free port of
127.0.0.1, on threads of this process, for the fakes of servers that are not ours (the hub,
GitHub, an instance that only has `/health`, an OTLP receiver...).

    with LoopbackServer(Handler, "fake-thing") as server:
        ... server.url ...

or `server = LoopbackServer(...)` then `server.close()` where a `with` block does not fit.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (the test's output stays the test's) and answers with
    `reply`."""

    def log_message(self, *args: object) -> None:
        pass

    def reply_head(self, status: int, headers: dict[str, str], length: int) -> None:
        """The status line and headers, with a Content-Length of `length`."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        """The whole answer (its body left out for a HEAD, as HTTP says)."""
        self.reply_head(status, headers or {}, len(body))
        if body and self.command != "HEAD":
            self.wfile.write(body)


class LoopbackServer:
    """`handler` served on a free port of 127.0.0.1 (a thread per request) until `close()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str = "loopback") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, name=name, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "LoopbackServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
