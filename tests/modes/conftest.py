"""Fixtures of the modes' tests: one real instance of each embedded model behind a real
gateway, shared by the package (model processes are the slow part), and an SSE reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from shared.catalogue import env_key, load_catalogue
from tests.harness import ManagedProcess, free_port, local_models, start_gateway, start_service, wait_until

MODELS = local_models(load_catalogue())
SMOL, GEMMA = MODELS[0], MODELS[1]


def gateway_env(data: Path, urls: dict[str, str], **extra: str) -> dict[str, str]:
    env = {f"{env_key(m)}_API_URL": urls.get(m, "") for m in MODELS}
    env.update({"ARENA_FLEET__DATA_DIR": str(data), "ARENA_GATEWAY_DB_PATH": str(data / "gateway.sqlite3"),
                "ARENA_GATEWAY_HEALTH_INTERVAL": "0.3", "ARENA_GATEWAY_LOG_FORMAT": "json",
                "ARENA_REGISTRATION_TOKEN": "", "ARENA_INSTANCE_SECRET": "", "BASE_DOMAIN": "",
                "GH_MODELS_TOKEN": "", "ARENA_MODES_ORCHESTRATOR_URL": "",
                # The tests start sessions faster than a person would; the limit has its own test.
                "ARENA_ARENA__SESSIONS_PER_MINUTE": "0"})
    env.update(extra)
    return env


def ready_models(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/api/modes/options", timeout=5).json()["models"]}


def wait_modes_ready(gateway: ManagedProcess, urls: dict[str, str]) -> ManagedProcess:
    wait_until(lambda: set(urls) <= ready_models(gateway.url), 60, what="models ready at the gateway")
    return gateway


def start_modes_gateway(data: Path, urls: dict[str, str], **extra: str) -> ManagedProcess:
    gateway = start_gateway(env=gateway_env(data, urls, **extra))
    try:
        return wait_modes_ready(gateway, urls)
    except BaseException:
        gateway.stop()
        raise


@pytest.fixture(scope="package")
def fleet(tmp_path_factory) -> Iterator[dict]:
    data = tmp_path_factory.mktemp("modes-data")
    services: dict[str, ManagedProcess] = {}
    gateway = None
    try:
        for model in MODELS:
            services[model] = start_service(model, env={"ARENA_FLEET__DATA_DIR": str(data)}, timeout=300)
        gateway = start_modes_gateway(data, {m: s.url for m, s in services.items()})
        yield {"gateway": gateway, "services": services, "data": data}
    finally:
        for proc in [gateway, *services.values()]:
            if proc:
                proc.stop()


def sse_events(response: httpx.Response) -> Iterator[dict]:
    """The JSON events of a modes stream, checking each `event:` name matches its `type`."""
    name, data = None, []
    for line in response.iter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            event = json.loads("\n".join(data))
            assert event["type"] == name, (name, event)
            yield event
            name, data = None, []


def run_mode(url: str, mode: str, body: dict, *, timeout: float = 240.0, headers: dict | None = None) -> list[dict]:
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=5)) as client:
        with client.stream("POST", f"{url}/api/modes/{mode}", json=body, headers=headers or {}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            events = list(sse_events(response))
    assert events and events[-1]["type"] == "done", events[-3:]
    assert response.headers["x-arena-session"] == events[-1]["transcript"]
    return events


def slots_active(service: ManagedProcess) -> int:
    return httpx.get(service.url + "/health/details", timeout=5).json()["slots"]["active"]


def of_type(events: list[dict], type_: str, **match) -> list[dict]:
    return [e for e in events if e["type"] == type_ and all(e.get(k) == v for k, v in match.items())]


__all__ = ["GEMMA", "MODELS", "SMOL", "free_port", "gateway_env", "of_type", "run_mode", "slots_active", "sse_events",
           "start_modes_gateway", "wait_modes_ready", "wait_until"]


EXTERNAL_TOKEN = "ghp_modes-test-secret-4f9a1c"  # the external orchestrator's token in these tests
EXTERNAL_MODEL = "openai/gpt-4o-mini"


class FakeOpenAIProcess(ManagedProcess):
    def __init__(self, record: Path) -> None:
        port = free_port()
        super().__init__("fake-openai", ["--port", str(port), "--record", str(record)], port,
                         module="tests.modes.fake_openai")
        self.record = record

    def set_answer(self, answer: str, delay: float = 0.0) -> None:
        httpx.post(self.url + "/_answer", json={"answer": answer, "delay": delay}, timeout=5).raise_for_status()

    def sent(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="package")
def external(fleet, tmp_path_factory) -> Iterator[dict]:
    """A gateway whose orchestrator can be an external endpoint (a local fake of GitHub Models)
    with a token, in front of the same model services as `fleet`."""
    data = tmp_path_factory.mktemp("modes-external")
    fake = FakeOpenAIProcess(data / "sent.jsonl")
    fake.start()
    state: dict = {"gateway": None, "fake": fake, "data": data}
    try:
        fake.wait_ready("/health", 30)
        state["env"] = dict(ARENA_MODES_ORCHESTRATOR_URL=fake.url + "/inference", GH_MODELS_TOKEN=EXTERNAL_TOKEN,
                            ARENA_MODES_ORCHESTRATOR_MODEL=EXTERNAL_MODEL)
        state["urls"] = {m: s.url for m, s in fleet["services"].items()}
        state["gateway"] = start_modes_gateway(data, state["urls"], **state["env"])
        yield state  # a test may replace state["gateway"] (a restart); the one there is stopped
    finally:
        for proc in (state["gateway"], fake):
            if proc:
                proc.stop()
