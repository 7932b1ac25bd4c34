"""`/api/instances*`: instances that register themselves, heartbeat, and deregister (see `gateway.registration`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from gateway.auth import admin_view, require_registration_token
from gateway.registration import REGISTRATION_SECRET_HEADER
from shared.errors import ApiError

router = APIRouter(prefix="/api/instances")


async def _json_body(request: Request, *, required: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "A JSON body is required.", code="invalid_json")
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None


def _instance_or_404(request: Request, instance_id: str):
    instance = request.app.state.instances.get(instance_id)
    if instance is None:
        raise ApiError(404, f"No instance '{instance_id}'.", code="instance_not_found")
    return instance


@router.post("", dependencies=[Depends(require_registration_token)])
async def register(request: Request) -> JSONResponse:
    instance, secret = await request.app.state.registrations.register(
        await _json_body(request, required=True), request.headers.get(REGISTRATION_SECRET_HEADER))
    request.app.state.monitor.probe_soon(instance)
    # The secret is shown once: heartbeats, deregistration and re-registration must send it.
    return JSONResponse({**instance.public(), **({"registration_secret": secret} if secret else {})})


@router.post("/{instance_id}/heartbeat", dependencies=[Depends(require_registration_token)])
async def heartbeat(instance_id: str, request: Request) -> JSONResponse:
    instance = await request.app.state.registrations.heartbeat(
        instance_id, await _json_body(request, required=False), request.headers.get(REGISTRATION_SECRET_HEADER))
    # `drain`: the instance was asked to stop (from the admin side): its runner drains and ends.
    return JSONResponse({**instance.public(), "drain": instance.retiring})


@router.delete("/{instance_id}", dependencies=[Depends(require_registration_token)])
async def deregister(instance_id: str, request: Request) -> JSONResponse:
    instance = await request.app.state.registrations.deregister(
        instance_id, request.headers.get(REGISTRATION_SECRET_HEADER))
    return JSONResponse(instance.public())


@router.get("")
async def list_instances(request: Request) -> JSONResponse:
    show_url = await admin_view(request)
    return JSONResponse({"data": [inst.public(show_url=show_url) for inst in request.app.state.instances.all()]})


@router.get("/{instance_id}")
async def get_instance(instance_id: str, request: Request) -> JSONResponse:
    return JSONResponse(_instance_or_404(request, instance_id).public(show_url=await admin_view(request)))
