"""HTTP routes of runtime instance control. Thin: the logic is `InstanceController`'s.

- `/api/admin/instances` (admin key): every model with its instances; start one (`POST`), drain
  one (`DELETE /api/admin/instances/{id}`), rolling restart (`POST /api/admin/instances/restart`),
  publish the catalogue overlay to the fleet's repository (`POST /api/admin/instances/catalogue/publish`).
- `POST /v1/models/{id}?action=load|unload` (admin key): the same operations in the shape of the
  systems this project grows from: load starts an instance unless one is ready, unload drains all.
Every action is written to the audit log.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.admin import record_admin_action
from gateway.auth import require_admin
from gateway.instance_control.controller import InstanceController
from gateway.instance_control.errors import InvalidAction


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)


def controller_of(request: Request) -> InstanceController:
    return request.app.state.instance_control


admin = APIRouter(prefix="/api/admin/instances", tags=["admin"], dependencies=[Depends(require_admin)])


@admin.get("")
async def list_instances(request: Request) -> dict[str, Any]:
    return {**controller_of(request).view(), "fleet": request.app.state.instance_control_fleet}


@admin.post("", status_code=202)
async def start_instance(body: ModelRequest, request: Request) -> dict[str, Any]:
    result = await controller_of(request).start(body.model)
    await record_admin_action(request, "instance.start", body.model, _summary(result))
    return result


@admin.post("/restart", status_code=202)
async def restart_model(body: ModelRequest, request: Request) -> dict[str, Any]:
    restart = controller_of(request).rolling_restart(body.model, reason="asked from the admin page")
    await record_admin_action(request, "instance.rolling_restart", body.model, {"instances": restart.total})
    return {"object": "rolling_restart", **restart.public()}


@admin.post("/catalogue/publish")
async def publish_catalogue(request: Request) -> dict[str, Any]:
    """Publish the runtime catalogue overlay to the fleet's repository (Actions): the runs started
    from now on read it. Also done by itself after a settings change and before each start."""
    from gateway.admin.routes import actor_of

    publication = await controller_of(request).publish_overlay(actor=actor_of(request),
                                                               reason="asked from the admin page")
    await record_admin_action(request, "catalogue.publish", publication.path, publication.audit_detail())
    return publication.public()


@admin.delete("/{instance_id}", status_code=202)
async def stop_instance(instance_id: str, request: Request) -> dict[str, Any]:
    result = await controller_of(request).stop(instance_id)
    await record_admin_action(request, "instance.stop", instance_id, _summary(result))
    return result


v1 = APIRouter(prefix="/v1", tags=["admin"])


@v1.post("/models/{model}", dependencies=[Depends(require_admin)])
async def load_or_unload(model: str, request: Request, action: str | None = Query(None, max_length=20)) -> JSONResponse:
    """Load (start one instance unless one is ready) or unload (drain every instance) a model."""
    control = controller_of(request)
    if action == "load":
        result = await control.load(model)
    elif action == "unload":
        result = await control.unload(model)
    else:
        raise InvalidAction(action)
    await record_admin_action(request, f"model.{action}", model, {"status": result["status"]})
    return JSONResponse(result, status_code=200 if result["status"] in ("loaded", "unloaded") else 202)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    instance = result.get("instance") or result.get("dispatch") or {}
    return {k: instance.get(k) for k in ("instance_id", "url", "state", "html_url", "run_id") if instance.get(k)}
