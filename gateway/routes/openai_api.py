"""`/v1/models`, and the completion endpoints' documentation: those are served by
`gateway.fast_path.CompletionRouter` in front of FastAPI's routing, so the routes below only
put their OpenAI request schemas into the OpenAPI document (and would serve the same way)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from gateway.auth import require_api_key
from services.protocol import ChatCompletionRequest, CompletionRequest
from shared.errors import model_not_found
from shared.openapi import COMPLETION_RESPONSES

router = APIRouter(prefix="/v1")
_CREATED = int(time.time())


def _model_object(request: Request, key: str) -> dict:
    spec = request.app.state.catalogue.models[key]
    return {"id": key, "object": "model", "created": _CREATED, "owned_by": "serverless-llm-arena",
            "display_name": spec.display_name, "ready_instances": len(request.app.state.instances.ready(key))}


@router.get("/models", dependencies=[Depends(require_api_key)])
async def list_models(request: Request) -> JSONResponse:
    keys = request.app.state.instances.ready_models()
    return JSONResponse({"object": "list", "data": [_model_object(request, key) for key in keys]})


@router.get("/models/{model}", dependencies=[Depends(require_api_key)])
async def get_model(model: str, request: Request) -> JSONResponse:
    if model not in request.app.state.instances.ready_models():
        raise model_not_found(model)
    return JSONResponse(_model_object(request, model))



@router.post("/chat/completions", responses=COMPLETION_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await _served_in_front(request, "/v1/chat/completions")


@router.post("/completions", responses=COMPLETION_RESPONSES)
async def completions(body: CompletionRequest, request: Request):
    return await _served_in_front(request, "/v1/completions")


async def _served_in_front(request: Request, endpoint: str):
    key = await request.app.state.key_guard.check(request)
    return await request.app.state.upstream.handle(request, endpoint, key.key_id if key else None)
