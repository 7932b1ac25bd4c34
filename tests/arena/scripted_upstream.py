"""A tiny OpenAI-compatible server that streams one given answer, as a real process.

For the browser's sanitizing test only: the answer must contain an exact hostile payload, which
a real small model will not reliably repeat. It speaks just enough of the API (`/health`,
`/v1/models`, streamed `/v1/chat/completions`) for the gateway to treat it like any foreign
server. Run: ``python -m tests.arena.scripted_upstream --port 9001 --model smollm2-135m --answer-file a.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def create_app(model: str, answer: str, delay: float) -> FastAPI:
    app = FastAPI()
    pieces = re.findall(r"\S+\s*|\s+", answer)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if body.get("model") != model:
            return JSONResponse({"error": {"message": "unknown model", "type": "invalid_request_error"}}, 404)

        def event(delta: dict, finish: str | None = None) -> bytes:
            return b"data: " + json.dumps({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                                           "created": 0, "model": model,
                                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                                           }).encode() + b"\n\n"

        async def stream():
            yield event({"role": "assistant"})
            for piece in pieces:
                await asyncio.sleep(delay)
                yield event({"content": piece})
            yield event({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--answer-file", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.01, help="seconds between streamed pieces")
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(create_app(args.model, args.answer_file.read_text(), args.delay), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
