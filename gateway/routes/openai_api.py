"""`/v1/models`. (The completion endpoints are served by `gateway.fast_path`, in front of the router.)"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from gateway.auth import require_api_key
from shared.errors import model_not_found

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
