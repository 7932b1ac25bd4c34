"""API keys and limits, admin endpoints, badges, status and metrics of the gateway, built
in-process (`gateway_apps`) in front of fake upstream processes."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.cli import main as arena
from tests.gateway.conftest import GEMMA, SMOL, assert_openai_error, chat_body, wait_ready
from tests.harness import wait_until


def arena_keys(capsys, db: str, *args: str) -> tuple[int, str]:
    """`arena keys --db DB ARGS`, run in-process: (exit code, output)."""
    capsys.readouterr()
    code = arena(["keys", "--db", db, *args])
    return code, capsys.readouterr().out


def test_keys_limits_and_admin(tmp_path, capsys, fake_upstreams, gateway_apps):
    fake = fake_upstreams()
    gateway = gateway_apps({SMOL: [fake.url]}, require_api_key=True, admin_key="admin-secret-0123456789",
                           cors_origins=["https://arena.example.org"])
    db = str(gateway.app.state.settings.db_path)
    wait_ready(gateway, f"{SMOL}-0")
    url = "/v1/chat/completions"

    assert_openai_error(gateway.post(url, json=chat_body()), 401, "missing_api_key")
    assert_openai_error(gateway.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-wrong"}),
                        401, "invalid_api_key")
    assert_openai_error(gateway.get("/v1/models"), 401)

    code, out = arena_keys(capsys, db, "create", "tester", "--rpm", "3", "--json")
    assert code == 0, out
    key = json.loads(out)
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert key["key"] not in open(db, "rb").read().decode(errors="replace")  # stored hashed
    for _ in range(3):
        assert gateway.post(url, json=chat_body(), headers=headers).status_code == 200
    limited = gateway.post(url, json=chat_body(), headers=headers)
    assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert 1 <= int(limited.headers["retry-after"]) <= 60

    code, out = arena_keys(capsys, db, "list", "--json")
    assert [k["key_id"] for k in json.loads(out)] == [key["key_id"]]
    assert "key" not in json.loads(out)[0]
    assert arena_keys(capsys, db, "revoke", key["key_id"])[0] == 0
    # Revoked outside the gateway: refused once the gateway reloads its keys (every 2 s).
    refused = wait_until(lambda: (r := gateway.post(url, json=chat_body(), headers=headers)).status_code == 401 and r,
                         timeout=6, what="revoked key refused")
    assert_openai_error(refused, 401, "invalid_api_key")

    admin = {"Authorization": "Bearer admin-secret-0123456789"}
    assert_openai_error(gateway.get("/api/admin/keys"), 401)
    made = gateway.post("/api/admin/keys", json={"name": "web"}, headers=admin).json()
    assert gateway.post(url, json=chat_body(), headers={"Authorization": f"Bearer {made['key']}"}).status_code == 200
    assert len(gateway.get("/api/admin/keys", headers=admin).json()["data"]) == 2
    assert_openai_error(gateway.post("/api/admin/keys", json={"rpm": 1}, headers=admin), 400)

    preflight = gateway.options(url, headers={"Origin": "https://arena.example.org",
                                              "Access-Control-Request-Method": "POST"})
    assert preflight.headers["access-control-allow-origin"] == "https://arena.example.org"
    other = gateway.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_admin_api_is_off_without_an_admin_key(gateway_apps):
    gateway = gateway_apps()
    assert_openai_error(gateway.get("/api/admin/keys"), 503, "admin_disabled")


# The shields.io endpoint schema (https://shields.io/badges/endpoint-badge).
_BADGE_FIELDS = {"schemaVersion": int, "label": str, "message": str, "color": str, "labelColor": str,
                 "isError": bool, "namedLogo": str, "logoSvg": str, "logoColor": str, "logoWidth": int,
                 "style": str, "cacheSeconds": int}


def assert_shields_badge(response: httpx.Response) -> dict:
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert "max-age=" in response.headers["cache-control"]
    assert int(response.headers["cache-control"].split("max-age=")[1].split(",")[0]) <= 60
    badge = response.json()
    assert badge["schemaVersion"] == 1 and isinstance(badge["label"], str) and badge["message"]
    for name, value in badge.items():
        assert name in _BADGE_FIELDS and isinstance(value, _BADGE_FIELDS[name]), (name, value)
    return badge


@pytest.fixture
def status_fleet(fake_upstreams, gateway_apps):
    fake = fake_upstreams()
    gateway = gateway_apps({SMOL: [fake.url], GEMMA: ["http://127.0.0.1:9"]})
    wait_ready(gateway, f"{SMOL}-0")
    return gateway


def test_badges_match_the_shields_schema(status_fleet):
    gateway = status_fleet
    system = assert_shields_badge(gateway.get("/api/badge/system"))
    assert system["label"] == "API Status" and system["message"] == "1/2 online" and system["color"] == "yellow"
    smol = assert_shields_badge(gateway.get(f"/api/badge/model/{SMOL}"))
    assert smol["message"].startswith("online") and smol["color"] == "brightgreen"
    gemma = assert_shields_badge(gateway.get(f"/api/badge/model/{GEMMA}"))
    assert gemma["color"] == "red"
    unknown = assert_shields_badge(gateway.get("/api/badge/model/<script>"))
    assert unknown["message"] == "unknown model"


def test_status_and_metrics_tell_the_truth(status_fleet):
    gateway = status_fleet
    for stream in (False, True):
        assert gateway.post("/v1/chat/completions", json=chat_body(stream=stream)).status_code == 200
    gateway.post("/v1/chat/completions", json=chat_body("nope"))
    gateway.post("/v1/chat/completions", json=chat_body(GEMMA))

    status = gateway.get("/api/status").json()
    models = {m["key"]: m for m in status["models"]}
    assert models[SMOL]["status"] == "online" and models[GEMMA]["status"] == "offline"
    smol = models[SMOL]["instances"][0]
    assert smol["state"] == "ready" and smol["last_probe_latency_ms"] > 0 and smol["tokens_per_second"] == 12.5
    assert smol["uptime_seconds"] > 0 and smol["requests_total"] == 2
    assert models[GEMMA]["instances"][0]["state"] == "unhealthy"

    page = gateway.get("/status")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f"{SMOL}-0" in page.text and "/api/status" in page.text and "unhealthy" in page.text
    # The page's script redraws with rows the server rendered: the same rows, not a second renderer.
    fragment = gateway.get("/status/fragment").json()
    assert fragment["summary"] == "1/2 models online"
    assert f"<code>{SMOL}-0</code>" in fragment["rows"] and '<span class="state unhealthy">' in fragment["rows"]
    assert "/status/fragment" in page.text and "<tr" not in page.text.split("<script>")[1]

    metrics = gateway.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    requests = [s for s in families["arena_gateway_requests"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in requests if s.labels["model"] == SMOL and s.labels["status"] == "200") == 2
    errors = {(s.labels["model"], s.labels["type"]) for s in families["arena_gateway_errors"].samples
              if s.name.endswith("_total")}
    assert (GEMMA, "no_ready_instance") in errors and ("unknown", "model_not_found") in errors
    ttft = [s for s in families["arena_gateway_time_to_first_token_seconds"].samples if s.name.endswith("_count")]
    assert sum(s.value for s in ttft) == 1
    tokens = [s for s in families["arena_gateway_tokens"].samples if s.name.endswith("_total")]
    assert sum(s.value for s in tokens if s.labels["kind"] == "completion") == 16 + 14
    state = {(s.labels["instance"], s.labels["state"]): s.value for s in families["arena_gateway_instance_state"].samples}
    assert state[(f"{SMOL}-0", "ready")] == 1 and state[(f"{GEMMA}-0", "unhealthy")] == 1
    assert "arena_gateway_request_duration_seconds" in families
