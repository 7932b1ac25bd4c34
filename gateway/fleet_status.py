"""The truth about the fleet: the status snapshot (`/api/status`, `/status`) and the badges."""

from __future__ import annotations

import time
from typing import Any, Callable

from gateway.instances import InstanceRegistry, InstanceState

BADGE_CACHE_CONTROL = "public, max-age=15"
# Live load figures, withheld while they could tell a blind battle's sides apart (gateway.arena.activity).
LIVE_LOAD_FIELDS = ("outstanding", "active", "queued", "tokens_per_second")


class FleetStatus:
    def __init__(self, registry: InstanceRegistry, started_at: float | None = None) -> None:
        self.registry = registry
        self.started_at = started_at or time.time()
        self.live_load_hidden: Callable[[], bool] = lambda: False   # the arena sets it

    def snapshot(self, *, show_urls: bool = False) -> dict[str, Any]:
        # The admin's view (show_urls) keeps the live load; the public one withholds it while a
        # blind battle could be told apart by it.
        hidden = not show_urls and self.live_load_hidden()
        models = []
        for key in self.deployed_models():
            spec = self.registry.catalogue.models[key]
            instances = self.registry.for_model(key)
            ready = [i for i in instances if i.state is InstanceState.READY]
            models.append({
                "key": key,
                "display_name": spec.display_name,
                "status": self._model_status(key),
                "ready_instances": len(ready),
                "instances_total": len([i for i in instances if i.state is not InstanceState.GONE]),
                "outstanding": sum(i.outstanding for i in instances),
                "tokens_per_second": round(sum(i.tokens_per_second or 0.0 for i in ready), 2),
                "instances": [i.public(show_url=show_urls) for i in instances],
            })
            if hidden:
                for view in (models[-1], *models[-1]["instances"]):
                    view.update({f: None for f in LIVE_LOAD_FIELDS if f in view})
        online = sum(1 for m in models if m["ready_instances"])
        return {
            "status": "ok" if online == len(models) and models else ("degraded" if online else "down"),
            "models_online": online,
            "models_total": len(models),
            "gateway_uptime_seconds": round(time.time() - self.started_at, 1),
            "generated_at": time.time(),
            "live_load_hidden": hidden,
            "models": models,
        }

    def deployed_models(self) -> list[str]:
        """The catalogue's models this gateway has instances of, in any state. A model no fleet
        here runs (the Actions lineup, seen from a local fleet) is left out, not counted as down."""
        return [key for key in self.registry.catalogue.models if self.registry.for_model(key)]

    def _model_status(self, key: str) -> str:
        states = {i.state for i in self.registry.for_model(key)}
        if InstanceState.READY in states:
            return "online"
        if InstanceState.LOADING in states:
            return "loading"
        if InstanceState.DRAINING in states:
            return "draining"
        return "offline"

    # -- shields.io endpoint badges ------------------------------------------------------

    def system_badge(self) -> dict[str, Any]:
        total = len(self.deployed_models())
        online = len(self.registry.ready_models())
        color = "brightgreen" if total and online == total else ("yellow" if online else "red")
        return {"schemaVersion": 1, "label": "API Status", "message": f"{online}/{total} online", "color": color}

    def model_badge(self, key: str) -> dict[str, Any]:
        spec = self.registry.catalogue.models.get(key)
        if spec is None:
            return {"schemaVersion": 1, "label": key[:64] or "model", "message": "unknown model",
                    "color": "lightgrey", "isError": True}
        status = self._model_status(key)
        ready = len(self.registry.ready(key))
        message = f"online ({ready} ready)" if status == "online" else status
        color = {"online": "brightgreen", "loading": "yellow", "draining": "orange"}.get(status, "red")
        return {"schemaVersion": 1, "label": spec.display_name, "message": message, "color": color}
