"""`/api/admin/models*`, `/api/admin/downloads*` and `/api/admin/catalogue.yaml`: models added
from the hub at runtime, their settings, and the effective catalogue as YAML. Thin: the logic is
in `catalogue_overlay.CatalogueOverlay` and `hub_downloads.HubDownloads`; their exceptions are
answered by the gateway's error table (`gateway.errors`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from gateway.admin.catalogue_overlay import EDITABLE, CatalogueOverlay, InvalidSetting
from gateway.admin.hub_downloads import Download, HubDownloads
from gateway.admin import record_admin_action
from gateway.auth import require_admin
from gateway.routes.admin_api import _json_object

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])

# Fields a new model may be given besides its repository and quantisation.
NEW_MODEL_FIELDS = ("key", "display_name", "description", "chat_template", "stop", *EDITABLE)


def _overlay(request: Request) -> CatalogueOverlay:
    return request.app.state.catalogue_overlay


def _hub(request: Request) -> HubDownloads:
    return request.app.state.hub_downloads


def _model(overlay: CatalogueOverlay, key: str) -> dict[str, Any]:
    spec = overlay.model_spec(key)
    return {"id": key, "object": "admin.model", "display_name": spec.display_name, "source": str(spec.source),
            "runtime": overlay.is_runtime(key), "settings": overlay.settings(key), "overrides": overlay.overrides(key)}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    overlay = _overlay(request)
    return {"object": "list", "data": [_model(overlay, key) for key in overlay.effective_catalogue().models],
            "editable": list(EDITABLE), "restart_needed": overlay.restart_needed(), "left_out": overlay.skipped}


@router.post("/models/inspect")
async def inspect_model(request: Request) -> dict[str, Any]:
    """Which file(s) a repository and quantisation name, and their size: nothing is downloaded."""
    body = await _json_object(request, '{"repo": "owner/name", "quant": "Q4_K_M"}')
    hub = _hub(request)
    choice = await hub.inspect(body.get("repo"), body.get("quant"))
    return choice.public(hub.max_bytes)


@router.post("/models", status_code=202)
async def add_model(request: Request) -> JSONResponse:
    """Start downloading a model from the hub; it joins the catalogue once downloaded and checked."""
    body = await _json_object(request, '{"repo": "owner/name", "quant": "Q4_K_M", "key": str, ...}')
    unknown = sorted(set(body) - {"repo", "quant", *NEW_MODEL_FIELDS})
    if unknown:
        raise InvalidSetting(f"{unknown[0]}: not a field of a new model; these are: repo, quant, "
                             f"{', '.join(NEW_MODEL_FIELDS)}.", param=unknown[0])
    overlay, hub, admin = _overlay(request), _hub(request), request.app.state.admin
    choice = await hub.inspect(body.get("repo"), body.get("quant"))
    fields = {name: body[name] for name in NEW_MODEL_FIELDS if name in body}
    fields.setdefault("key", choice.default_key())
    fields.update(source=choice.source, sha256=choice.files[0].sha256)
    spec = overlay.new_model_spec(fields)
    actor = admin.actor(request)

    async def complete(download: Download) -> None:
        await overlay.add_model(spec, actor=actor)
        await admin.audit.record(actor, "model.add", spec.key, {"source": spec.source.__str__(),
                                                                "bytes": download.choice.total_size})

    download = hub.start(spec.key, choice, actor=actor, on_complete=complete)
    await record_admin_action(request, "model.download", spec.key, {"source": choice.source, "bytes": choice.total_size})
    return JSONResponse(download.public(), status_code=202)


@router.delete("/models/{key}")
async def remove_model(request: Request, key: str) -> dict[str, Any]:
    """Remove a model added at runtime from the catalogue (its files stay in the hub cache).
    Refused (409, naming them) while instances of it run: unload it first."""
    overlay = _overlay(request)
    overlay.check_removable(key)
    control = getattr(request.app.state, "instance_control", None)
    actor = request.app.state.admin.actor(request)
    if control is None:
        await overlay.remove_model(key, actor=actor)
    else:
        async with control.removal(key):  # no start of it meanwhile (one under way is waited for)
            await overlay.remove_model(key, actor=actor)
    await record_admin_action(request, "model.remove", key)
    return {"id": key, "object": "admin.model", "deleted": True}


@router.patch("/models/{key}/settings")
async def change_settings(request: Request, key: str) -> dict[str, Any]:
    body = await _json_object(request, f"of settings ({', '.join(EDITABLE)})")
    overlay, admin = _overlay(request), request.app.state.admin
    _, restart = await overlay.update_settings(
        key, body, actor=admin.actor(request), on_saved=lambda: record_admin_action(request, "model.settings", key, body))
    return {**_model(overlay, key), "restart": _restart_state(overlay, restart)}


@router.delete("/models/{key}/settings")
async def reset_settings(request: Request, key: str) -> dict[str, Any]:
    """Back to the catalogue file's settings (a model of the file only)."""
    overlay, admin = _overlay(request), request.app.state.admin
    await overlay.reset_settings(key, actor=admin.actor(request),
                                 on_saved=lambda: record_admin_action(request, "model.settings_reset", key))
    return {**_model(overlay, key), "restart": _restart_state(overlay, True)}


def _restart_state(overlay: CatalogueOverlay, restart: bool) -> str:
    """What happens to the model's instances: nothing to do, a rolling restart under way, or a
    restart needed (nothing in this gateway restarts instances yet)."""
    if not restart:
        return "not_needed"
    return "needed" if overlay.restart_needed() else "rolling"


@router.get("/downloads")
async def list_downloads(request: Request) -> dict[str, Any]:
    hub = _hub(request)
    return {"object": "list", "data": [d.public() for d in hub.all()], "max_download_bytes": hub.max_bytes}


@router.get("/downloads/{download_id}")
async def get_download(request: Request, download_id: str) -> dict[str, Any]:
    return _hub(request).get(download_id).public()


@router.delete("/downloads/{download_id}")
async def cancel_download(request: Request, download_id: str) -> dict[str, Any]:
    """Cancel a running download; its partial file is removed. A finished one is left as it is."""
    download = _hub(request).cancel(download_id)
    await record_admin_action(request, "model.download_cancel", download.key, {"id": download_id})
    return download.public()


@router.get("/catalogue.yaml")
async def export_catalogue(request: Request) -> Response:
    """The effective catalogue (the file plus the runtime overlay) in the catalogue's own format."""
    return Response(_overlay(request).export_yaml(), media_type="application/yaml",
                    headers={"Content-Disposition": 'attachment; filename="catalogue.yaml"',
                             "Cache-Control": "no-store"})
