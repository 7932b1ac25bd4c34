"""A stand-in for an external OpenAI-compatible endpoint (GitHub Models), for the modes' tests.

It answers every `POST <base>/chat/completions` with the same text (default: garbage that is
no JSON at all; `POST /_answer {"answer": ..., "delay": seconds}` changes it), streamed like OpenAI's API or not, and appends what it was sent (path, the
Authorization header, the body) to a JSON Lines file, so a test can check what reached it.

Run: ``python -m tests.modes.fake_openai --port 9002 --record /tmp/sent.jsonl [--answer TEXT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

GARBAGE = "<<not json>> ranking: maybe?? }{ complete=perhaps \u2603"


class FakeOpenAI:
    def __init__(self, record: Path, answer: str, base: str = "/inference") -> None:
        self.record = record
        self.answer = answer
        self.base = base.rstrip("/")
        self.delay = 0.0  # seconds before answering: a slow endpoint

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/_answer" and scope["method"] == "POST":
            control = json.loads(body)
            self.answer = control["answer"]
            self.delay = float(control.get("delay", 0.0))
            return await self._send(send, 200, b'{"ok":true}', b"application/json")
        if scope["path"] == "/health":
            return await self._send(send, 200, b'{"status":"ok"}', b"application/json")
        if scope["path"] != f"{self.base}/chat/completions" or scope["method"] != "POST":
            return await self._send(send, 404, b'{"error":{"message":"no such route","type":"invalid_request_error"}}',
                                    b"application/json")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = json.loads(body or b"{}")
        with self.record.open("a") as f:
            f.write(json.dumps({"path": scope["path"], "authorization": headers.get("authorization"),
                                "body": request}) + "\n")
        if self.delay:
            await asyncio.sleep(self.delay)
        if not request.get("stream"):
            answer = {"id": "chatcmpl-x", "object": "chat.completion", "created": int(time.time()),
                      "model": request.get("model"),
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer},
                                   "finish_reason": "stop"}]}
            return await self._send(send, 200, json.dumps(answer).encode(), b"application/json")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        words = self.answer.split(" ")
        for i, word in enumerate(words):
            chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": request.get("model"),
                     "choices": [{"index": 0, "delta": {"content": word + (" " if i < len(words) - 1 else "")},
                                  "finish_reason": None}]}
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n",
                        "more_body": True})
        last = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": request.get("model"),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await send({"type": "http.response.body", "body": b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n",
                    "more_body": False})

    @staticmethod
    async def _send(send, status: int, body: bytes, content_type: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--answer", default=GARBAGE)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(FakeOpenAI(args.record, args.answer), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
