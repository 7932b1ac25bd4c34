"""Fixtures for the gateway's tests: the gateway built in-process from an explicit catalogue
and settings (`gateway_apps`, for its logic), or real gateway processes (`gateways`, from
tests/conftest.py, for what needs a process: logs, signals, restarts), in front of real HTTP servers:
`tests.fake_upstream` processes, and real model services where a test says so."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from shared.catalogue import load_catalogue, env_key
from tests.harness import ManagedProcess, assert_openai_error, free_port, local_models, wait_until  # noqa: F401 (re-exported)

CATALOGUE = load_catalogue()
MODELS = local_models(CATALOGUE)
SMOL, GEMMA = MODELS[0], MODELS[1]


class FakeUpstreamProcess(ManagedProcess):
    """`python -m tests.fake_upstream` on a free port."""

    def __init__(self, name: str, args: list[str], port: int) -> None:
        super().__init__(name, ["--port", str(port), *args], port, module="tests.fake_upstream")

    def control(self, **changes) -> dict:
        return httpx.post(self.url + "/_control", json=changes, timeout=5).json()

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats", timeout=5).json()


def gateway_env(tmp_path: Path, urls: dict[str, list[str]] | None = None, **settings: str) -> dict[str, str]:
    """Environment of a test gateway: exactly these static instances, a private SQLite file, fast probes."""
    env = {f"{env_key(model)}_API_URL": ",".join((urls or {}).get(model, [])) for model in MODELS}
    env.update({"ARENA_GATEWAY_DB_PATH": str(tmp_path / "gateway.sqlite3"), "ARENA_GATEWAY_HEALTH_INTERVAL": "0.2",
                "ARENA_GATEWAY_HEALTH_TIMEOUT": "1.0", "ARENA_GATEWAY_LOG_FORMAT": "json",
                "ARENA_REGISTRATION_TOKEN": "", "ARENA_INSTANCE_SECRET": "", "BASE_DOMAIN": ""})
    env.update({k if k.isupper() else f"ARENA_GATEWAY_{k.upper()}": v for k, v in settings.items()})
    return env


def instance_state(gateway: ManagedProcess | TestClient, instance_id: str) -> str | None:
    if isinstance(gateway, TestClient):
        response = gateway.get(f"/api/instances/{instance_id}")
    else:
        response = httpx.get(f"{gateway.url}/api/instances/{instance_id}", timeout=5)
    return response.json()["state"] if response.status_code == 200 else None


def wait_ready(gateway: ManagedProcess | TestClient, *instance_ids: str, timeout: float = 15.0) -> None:
    for instance_id in instance_ids:
        wait_until(lambda: instance_state(gateway, instance_id) == "ready", timeout, what=f"{instance_id} ready")


@pytest.fixture
def fake_upstreams() -> Iterator[Callable[..., FakeUpstreamProcess]]:
    started: list[FakeUpstreamProcess] = []

    def start(*args: str, model: str = SMOL) -> FakeUpstreamProcess:
        proc = FakeUpstreamProcess(f"fake-{model}", ["--model", model, *args], free_port())
        proc.start()
        started.append(proc)
        return proc.wait_ready("/health", timeout=30)

    yield start
    for proc in started:
        proc.stop(timeout=5)


def gateway_settings(tmp_path: Path, urls: dict[str, list[str]] | None = None, **overrides) -> GatewaySettings:
    """Settings of an in-process test gateway: exactly these static instances, a private SQLite
    file, fast probes, no secrets (whatever the environment says)."""
    values = dict(instance_urls=urls or {}, db_path=tmp_path / "gateway.sqlite3", health_interval=0.2,
                  health_timeout=1.0, registration_token=None, instance_secret=None, require_api_key=False,
                  admin_key=None, cors_origins=[])
    return GatewaySettings(**{**values, **overrides})


@pytest.fixture
def gateway_apps(tmp_path) -> Iterator[Callable[..., TestClient]]:
    """`gateway_apps(urls, **settings)`: the gateway app, started (lifespan and all) in this
    process, behind a Starlette TestClient."""
    started: list[TestClient] = []

    def start(urls: dict[str, list[str]] | None = None, **overrides) -> TestClient:
        app = create_app(CATALOGUE, gateway_settings(tmp_path, urls, **overrides))
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in started:
        client.__exit__(None, None, None)


def chat_body(model: str = SMOL, stream: bool = False, text: str = "Hello") -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}], "max_tokens": 16}


