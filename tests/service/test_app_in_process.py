"""The model service's app built in-process from an explicit catalogue and settings: what it
answers before any model runs (a model file that cannot load)."""

from __future__ import annotations

import yaml
from starlette.testclient import TestClient

from services.app import create_app
from services.settings import ServiceSettings
from shared.catalogue import load_catalogue
from tests.harness import PROJECT_ROOT, assert_openai_error, wait_until


def broken_catalogue(tmp_path):
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "catalogue.yaml").read_text())
    raw["models"]["smollm2-135m"]["source"] = f"path:{tmp_path / 'missing.gguf'}"
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_catalogue(path, environ={})


def test_a_model_that_cannot_load_is_reported_and_refused_in_openai_shape(tmp_path):
    app = create_app(broken_catalogue(tmp_path), ServiceSettings(model="smollm2-135m", instance_id="test-1",
                                                                 instance_secret=None))
    with TestClient(app) as client:
        health = wait_until(lambda: (r := client.get("/health")).json()["status"] == "error" and r, 30,
                            what="the load to fail")
        assert health.status_code == 503 and "missing.gguf" in health.json()["error"]
        body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}]}
        assert_openai_error(client.post("/v1/chat/completions", json=body), 503, "model_load_failed")
        assert_openai_error(client.post("/v1/chat/completions", json={**body, "model": "gpt-9"}), 404,
                            "model_not_found", "model")
        assert_openai_error(client.post("/v1/chat/completions", json={**body, "temperature": 9}), 400,
                            "invalid_value", "temperature")
        assert client.get("/v1/models").json()["data"][0]["id"] == "smollm2-135m"


async def test_a_client_gone_in_the_middle_of_its_body_gets_a_quiet_400_not_a_500(tmp_path):
    # Raw ASGI: part of a body, then the client is gone. FastAPI's own body parameter answered
    # 400; the raw-body routes must too (a 500 would log a traceback and count a server error).
    app = create_app(broken_catalogue(tmp_path), ServiceSettings(model="smollm2-135m", instance_id="test-2",
                                                                 instance_secret=None))
    incoming: list[dict] = []
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    for path in ("/v1/chat/completions", "/v1/completions"):
        incoming[:] = [{"type": "http.request", "body": b'{"model": "smollm2-135m", ', "more_body": True},
                       {"type": "http.disconnect"}]
        sent.clear()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
        start = next(message for message in sent if message["type"] == "http.response.start")
        assert start["status"] == 400, (path, sent)
