"""`/api/admin/keys*`: API key management over HTTP, behind the admin key.

Every change is written to the admin audit log (`gateway.admin`); the list joins each key's
use (requests and last use, summed by the admin analytics).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse

from gateway.admin import record_admin_action
from gateway.auth import require_admin
from shared.errors import ApiError

router = APIRouter(prefix="/api/admin", dependencies=[Depends(require_admin)])

MAX_NAME_CHARS = 200
MAX_RPM = 1_000_000


async def _json_object(request: Request, shape: str) -> dict[str, Any]:
    try:
        payload = await request.json()
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
        payload = None
    if not isinstance(payload, dict):
        raise ApiError(400, f"Send a JSON object {shape}.", code="invalid_json")
    return payload


def _rpm(payload: dict[str, Any]) -> int | None:
    rpm = payload.get("rpm")
    if rpm is not None and (isinstance(rpm, bool) or not isinstance(rpm, int) or not 0 <= rpm <= MAX_RPM):
        raise ApiError(400, f"'rpm' must be an integer from 0 to {MAX_RPM} (0: no limit), or null for the "
                            "gateway's default.", code="invalid_value", param="rpm")
    return rpm


def _public(key: Any, usage: dict[str, dict[str, Any]]) -> dict[str, Any]:
    use = usage.get(key.key_id, {})
    return {**key.public(), "requests": use.get("requests", 0), "last_used_at": use.get("last_used_at")}


@router.get("/keys")
async def list_keys(request: Request) -> JSONResponse:
    usage = await request.app.state.admin.analytics.key_usage()
    return JSONResponse({"data": [_public(key, usage) for key in await request.app.state.api_keys.list()]})


@router.post("/keys")
async def create_key(request: Request) -> JSONResponse:
    payload = await _json_object(request, '{"name": str, "rpm": int | null}')
    name = payload.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise ApiError(400, f"'name' must be a non-empty string of at most {MAX_NAME_CHARS} characters.",
                       code="invalid_value", param="name")
    key, secret = await request.app.state.api_keys.create(name.strip(), _rpm(payload))
    await request.app.state.key_cache.refresh()
    await record_admin_action(request, "key.create", key.key_id, {"name": key.name, "rpm": key.rpm})
    return JSONResponse({**_public(key, {}), "key": secret})


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, request: Request) -> JSONResponse:
    """Set a key's limit: {"rpm": int} (0: none) or {"rpm": null} (the gateway's default)."""
    payload = await _json_object(request, '{"rpm": int | null}')
    if set(payload) != {"rpm"}:
        raise ApiError(400, "Send exactly {\"rpm\": int | null}.", code="invalid_value",
                       param=next(iter(set(payload) - {"rpm"}), "rpm"))
    key = await request.app.state.api_keys.set_limit(key_id, _rpm(payload))
    if key is None:
        raise ApiError(404, f"No active key '{key_id}'.", code="key_not_found", param="key_id")
    await request.app.state.key_cache.refresh()
    await record_admin_action(request, "key.limit", key_id, {"rpm": key.rpm})
    usage = await request.app.state.admin.analytics.key_usage()
    return JSONResponse(_public(key, usage))


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request) -> JSONResponse:
    if not await request.app.state.api_keys.revoke(key_id):
        raise ApiError(404, f"No active key '{key_id}'.", code="key_not_found", param="key_id")
    request.app.state.key_cache.forget(key_id)
    await record_admin_action(request, "key.revoke", key_id)
    return JSONResponse({"key_id": key_id, "revoked": True})
