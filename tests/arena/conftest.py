"""The arena's tests share one fleet: a gateway with one real instance of each embedded model."""

from __future__ import annotations

import httpx
import pytest

from shared.catalogue import env_key
from tests.harness import ManagedProcess, start_gateway, start_service, wait_until

MODELS = ("smollm2-135m", "gemma3-270m")
DISPLAY = {"smollm2-135m": "SmolLM2 135M Instruct", "gemma3-270m": "Gemma 3 270M (base)"}


def wait_models(gateway_url: str, models: tuple[str, ...], timeout: float = 60.0) -> None:
    def ready() -> bool:
        data = httpx.get(gateway_url + "/api/arena/models", timeout=5).json()["data"]
        return set(models) <= {m["id"] for m in data}

    wait_until(ready, timeout, 0.3, what=f"models {models} ready at the gateway")


def fleet_urls(services: dict[str, ManagedProcess]) -> dict[str, str]:
    """The gateway's environment that gives each model these services as its static instances."""
    return {f"{env_key(model)}_API_URL": service.url for model, service in services.items()}


@pytest.fixture(scope="package")
def fleet(tmp_path_factory):
    """The gateway with one real instance of each embedded model."""
    data = tmp_path_factory.mktemp("arena-data")
    env = {"ARENA_FLEET__DATA_DIR": str(data)}
    services: list[ManagedProcess] = []
    gateway = None
    try:
        for model in MODELS:
            services.append(start_service(model, env=env, timeout=300))
        # Every test here plays battles from 127.0.0.1: the per-client limits (tested on their
        # own in test_clients.py) are raised so the shared gateway does not refuse a later test.
        limits = {"ARENA_ARENA__BATTLES_PER_MINUTE": "1000", "ARENA_ARENA__VOTES_PER_MINUTE": "1000"}
        gateway = start_gateway(env={**env, **limits, **fleet_urls(dict(zip(MODELS, services)))})
        wait_models(gateway.url, MODELS)
        yield {"gateway": gateway, "services": dict(zip(MODELS, services))}
    finally:
        for proc in [gateway, *services]:
            if proc:
                proc.stop()
