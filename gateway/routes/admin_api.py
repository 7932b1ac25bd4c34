"""`/api/admin/*`: API key management over HTTP, behind the admin key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from gateway.auth import require_admin
from shared.errors import ApiError

router = APIRouter(prefix="/api/admin", dependencies=[Depends(require_admin)])


@router.get("/keys")
async def list_keys(request: Request) -> JSONResponse:
    return JSONResponse({"data": [key.public() for key in await request.app.state.api_keys.list()]})


@router.post("/keys")
async def create_key(request: Request) -> JSONResponse:
    try:
        payload = await request.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) or not payload["name"].strip():
        raise ApiError(400, "Send {\"name\": str, \"rpm\": int | null}.", code="invalid_value", param="name")
    rpm = payload.get("rpm")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or rpm < 0):
        raise ApiError(400, "'rpm' must be a non-negative integer or null.", code="invalid_value", param="rpm")
    key, secret = await request.app.state.api_keys.create(payload["name"].strip(), rpm)
    return JSONResponse({**key.public(), "key": secret})


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request) -> JSONResponse:
    if not await request.app.state.api_keys.revoke(key_id):
        raise ApiError(404, f"No active key '{key_id}'.", code="key_not_found")
    request.app.state.key_cache.forget(key_id)
    return JSONResponse({"key_id": key_id, "revoked": True})
