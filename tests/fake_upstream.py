"""An instant OpenAI-compatible upstream, for the gateway's overhead benchmark and its tests.

Not a model: it answers every completion at once with fixed text (streams are `--chunks`
events, optionally `--chunk-delay` apart) so that what is measured is the gateway, not the
model; or, with `--answer-file`, streams that file's text word by word (the browser tests use
it for an answer that must hold an exact hostile payload, which no small model repeats
reliably). It plays the roles the gateway must handle through a small control endpoint
(`POST /_control`): our model service (with `/health/details`) or a foreign server without it,
loading, draining, answering 503 or any error (`reject`), a model service's slots and
queue (`max_queue`: at most `slots` answered at once, 503 beyond the queue), and it counts requests and client disconnects (`/_stats`).

Run: ``python -m tests.fake_upstream --port 9001 --model smollm2-135m``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

START = time.time()


class FakeUpstream:
    def __init__(self, model: str, *, chunks: int = 16, details: bool = True, slots: int = 4,
                 secret: str | None = None, served_name: str | None = None, answer: str | None = None,
                 chunk_delay: float = 0.0) -> None:
        self.model = model
        self.answer = answer
        self.served_name = served_name or model
        self.instance_id = f"fake-{uuid.uuid4().hex[:8]}"
        self.control: dict[str, Any] = {"status": "ok", "chunks": chunks, "chunk_delay": chunk_delay, "delay": 0.0,
                                        "reject_503": False, "details": details, "slots": slots,
                                        "break_after": None, "reject": None, "max_queue": None,
                                        "trickle": False}
        self.secret = secret
        self.stats = {"requests": 0, "active": 0, "completed": 0, "disconnected": 0, "rejected": 0, "bodies": []}
        self.serving = 0               # requests in a slot (with max_queue set, at most `slots`)
        self.turn = asyncio.Event()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        c = self.control
        if path == "/_control" and method == "POST":
            c.update(json.loads(body or b"{}"))
            return await _json(send, 200, c)
        if path == "/_stats":
            return await _json(send, 200, {k: v for k, v in self.stats.items() if k != "bodies"}
                               | {"last_body": self.stats["bodies"][-1] if self.stats["bodies"] else None})
        if path == "/health/details" and c["details"]:
            return await _json(send, 200, self._details())
        if path == "/health":
            if c["status"] == "ok":
                return await _json(send, 200, {"status": "ok"})
            return await _json(send, 503, {"status": c["status"]})
        if path == "/v1/models":
            return await _json(send, 200, {"object": "list", "data": [{"id": self.served_name, "object": "model"}]})
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            headers = dict(scope["headers"])
            if self.secret and headers.get(b"x-arena-instance-secret", b"").decode() != self.secret:
                return await _json(send, 401, {"error": {"message": "instance secret required", "type": "auth"}})
            if c["reject_503"] or c["status"] != "ok":
                return await _json(send, 503, {"error": {"message": "queue full", "type": "service_unavailable"}},
                                   extra=[(b"retry-after", b"1")])
            if c["reject"]:  # {"status": 400, "error": {...}}: an instance refusing the request
                return await _json(send, c["reject"]["status"], {"error": c["reject"]["error"]})
            request = json.loads(body)
            self.stats["bodies"] = self.stats["bodies"][-20:] + [request]
            if request.get("model") != self.served_name:
                return await _json(send, 404, {"error": {"message": f"model {request.get('model')} not served",
                                                         "type": "invalid_request_error", "code": "model_not_found"}})
            self.stats["requests"] += 1
            if c["max_queue"] is not None and self.stats["active"] >= c["slots"] + c["max_queue"]:
                self.stats["rejected"] += 1  # like a model service whose queue is full
                return await _json(send, 503, {"error": {"message": "queue full", "type": "service_unavailable",
                                                         "code": "queue_full"}}, extra=[(b"retry-after", b"1")])
            self.stats["active"] += 1
            disconnected = asyncio.Event()
            # Only slow answers watch for a disconnect: the instant ones stay as cheap as can be.
            slow = bool(c["delay"] or c["chunk_delay"] or c["trickle"])
            watcher = asyncio.ensure_future(_watch_disconnect(receive, disconnected)) if slow else None
            in_slot = False
            try:
                if c["max_queue"] is not None:
                    while self.serving >= c["slots"]:
                        self.turn.clear()
                        await self.turn.wait()
                self.serving += 1
                in_slot = True
                if c["delay"]:
                    try:
                        await asyncio.wait_for(disconnected.wait(), c["delay"])
                        self.stats["disconnected"] += 1
                        return
                    except asyncio.TimeoutError:
                        pass
                chat = path == "/v1/chat/completions"
                if request.get("stream"):
                    if not await self._stream(send, disconnected, chat):
                        self.stats["disconnected"] += 1
                        return
                else:
                    await _json(send, 200, self._completion(chat))
                self.stats["completed"] += 1
            finally:
                if watcher:
                    watcher.cancel()
                self.stats["active"] -= 1
                if in_slot:
                    self.serving -= 1
                    self.turn.set()
            return
        await _json(send, 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})

    def _details(self) -> dict[str, Any]:
        c = self.control
        active = min(self.stats["active"], c["slots"])
        return {"status": c["status"], "model": self.model, "display_name": "fake", "source": "fake",
                "instance_id": self.instance_id, "version": "0", "uptime_seconds": time.time() - START,
                "n_ctx": 2048, "threads": 1, "n_batch": 8,
                "slots": {"total": c["slots"], "active": active, "free": c["slots"] - active},
                "queue": {"queued": max(0, self.stats["active"] - c["slots"]), "max": 64},
                "throughput": {"requests_completed": self.stats["completed"], "tokens_per_second": 12.5}}

    def _pieces(self, chat: bool) -> list[str]:
        """The text of each content event: the scripted answer's words, or `w<i> ` filling
        `chunks` events in all (a chat stream's first event carries the role, the last none)."""
        if self.answer is not None:
            return re.findall(r"\S+\s*|\s+", self.answer)
        n = self.control["chunks"]
        return [f"w{i} " for i in range(1 if chat else 0, n - 1)]

    def _completion(self, chat: bool) -> dict[str, Any]:
        if self.answer is not None:
            text = self.answer
            n = len(self._pieces(chat))
        else:
            n = self.control["chunks"]
            text = "".join(f"w{i} " for i in range(n))
        usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
        if chat:
            return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                    "model": self.served_name, "usage": usage,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}]}
        return {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                "model": self.served_name, "usage": usage,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}

    async def _stream(self, send: Any, disconnected: asyncio.Event, chat: bool) -> bool:
        """Send the stream; False if the client went away first."""
        c = self.control
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        texts = self._pieces(chat)
        parts: list[str | None] = ([None] if chat else []) + texts + [""]  # None: the role event
        for i, text in enumerate(parts):
            if disconnected.is_set():
                return False
            if c["break_after"] is not None and i >= c["break_after"]:
                # Half an event, then the connection drops.
                await send({"type": "http.response.body", "body": b'data: {"id": "chatcmpl-fa', "more_body": True})
                raise RuntimeError("fake upstream breaks the stream on purpose")
            if c["trickle"]:  # one byte a second, for ever
                while not disconnected.is_set():
                    await send({"type": "http.response.body", "body": b" ", "more_body": True})
                    try:
                        await asyncio.wait_for(disconnected.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
                return False
            last = i == len(parts) - 1
            if chat:
                delta = {"role": "assistant"} if text is None else ({} if last else {"content": text})
                event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                         "model": self.served_name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}]}
            else:
                event = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": self.served_name,
                         "choices": [{"index": 0, "text": text, "finish_reason": "stop" if last else None}]}
            try:
                await send({"type": "http.response.body", "body": b"data: " + json.dumps(event).encode() + b"\n\n",
                            "more_body": True})
            except OSError:
                return False
            if c["chunk_delay"]:
                try:
                    await asyncio.wait_for(disconnected.wait(), c["chunk_delay"])
                except asyncio.TimeoutError:
                    pass
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        return True


async def _watch_disconnect(receive: Any, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _json(send: Any, status: int, payload: Any, extra: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--served-name", help="model id it wants in requests (a foreign server's own name)")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--no-details", action="store_true", help="no /health/details, like a foreign server")
    parser.add_argument("--secret", help="require this X-Arena-Instance-Secret")
    parser.add_argument("--answer-file", type=Path, help="stream this file's text, word by word")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed events")
    args = parser.parse_args(argv)
    import uvicorn

    answer = args.answer_file.read_text() if args.answer_file else None
    app = FakeUpstream(args.model, chunks=args.chunks, details=not args.no_details, slots=args.slots,
                       secret=args.secret, served_name=args.served_name, answer=answer, chunk_delay=args.chunk_delay)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
