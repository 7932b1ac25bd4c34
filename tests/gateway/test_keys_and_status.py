"""API keys and limits, admin endpoints, badges, status and metrics of a real gateway."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import GEMMA, SMOL, assert_openai_error, chat_body, gateway_env, wait_ready
from tests.harness import PROJECT_ROOT, wait_until


def arena_keys(db: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.cli", "keys", "--db", db, *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_keys_limits_and_admin(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    env = gateway_env(tmp_path, {SMOL: [fake.url]}, require_api_key="true", admin_key="admin-secret",
                      cors_origins="https://arena.example.org")
    db = env["ARENA_GATEWAY_DB_PATH"]
    gateway = gateways(env)
    wait_ready(gateway, f"{SMOL}-0")
    url = gateway.url + "/v1/chat/completions"

    assert_openai_error(httpx.post(url, json=chat_body(), timeout=5), 401, "missing_api_key")
    assert_openai_error(httpx.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-wrong"}, timeout=5),
                        401, "invalid_api_key")
    assert_openai_error(httpx.get(gateway.url + "/v1/models", timeout=5), 401)

    created = arena_keys(db, "create", "tester", "--rpm", "3", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert key["key"] not in open(db, "rb").read().decode(errors="replace")  # stored hashed
    for _ in range(3):
        assert httpx.post(url, json=chat_body(), headers=headers, timeout=10).status_code == 200
    limited = httpx.post(url, json=chat_body(), headers=headers, timeout=5)
    assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert 1 <= int(limited.headers["retry-after"]) <= 60

    listed = arena_keys(db, "list", "--json")
    assert [k["key_id"] for k in json.loads(listed.stdout)] == [key["key_id"]]
    assert "key" not in json.loads(listed.stdout)[0]
    assert arena_keys(db, "revoke", key["key_id"]).returncode == 0
    # Revoked outside the gateway: refused once the gateway reloads its keys (every 2 s).
    refused = wait_until(lambda: (r := httpx.post(url, json=chat_body(), headers=headers, timeout=5)).status_code
                         == 401 and r, timeout=6, what="revoked key refused")
    assert_openai_error(refused, 401, "invalid_api_key")

    admin = {"Authorization": "Bearer admin-secret"}
    assert_openai_error(httpx.get(gateway.url + "/api/admin/keys", timeout=5), 401)
    made = httpx.post(gateway.url + "/api/admin/keys", json={"name": "web"}, headers=admin, timeout=5).json()
    assert httpx.post(url, json=chat_body(), headers={"Authorization": f"Bearer {made['key']}"},
                      timeout=10).status_code == 200
    assert len(httpx.get(gateway.url + "/api/admin/keys", headers=admin, timeout=5).json()["data"]) == 2
    assert_openai_error(httpx.post(gateway.url + "/api/admin/keys", json={"rpm": 1}, headers=admin, timeout=5), 400)

    preflight = httpx.options(url, headers={"Origin": "https://arena.example.org",
                                            "Access-Control-Request-Method": "POST"}, timeout=5)
    assert preflight.headers["access-control-allow-origin"] == "https://arena.example.org"
    other = httpx.options(url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                          timeout=5)
    assert "access-control-allow-origin" not in other.headers


def test_admin_api_is_off_without_an_admin_key(tmp_path, gateways):
    gateway = gateways(gateway_env(tmp_path))
    assert_openai_error(httpx.get(gateway.url + "/api/admin/keys", timeout=5), 503, "admin_disabled")


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
def status_fleet(tmp_path, fake_upstreams, gateways):
    fake = fake_upstreams()
    gateway = gateways(gateway_env(tmp_path, {SMOL: [fake.url], GEMMA: ["http://127.0.0.1:9"]}))
    wait_ready(gateway, f"{SMOL}-0")
    return gateway


def test_badges_match_the_shields_schema(status_fleet):
    gateway = status_fleet
    system = assert_shields_badge(httpx.get(gateway.url + "/api/badge/system", timeout=5))
    assert system["label"] == "API Status" and system["message"] == "1/2 online" and system["color"] == "yellow"
    smol = assert_shields_badge(httpx.get(f"{gateway.url}/api/badge/model/{SMOL}", timeout=5))
    assert smol["message"].startswith("online") and smol["color"] == "brightgreen"
    gemma = assert_shields_badge(httpx.get(f"{gateway.url}/api/badge/model/{GEMMA}", timeout=5))
    assert gemma["color"] == "red"
    unknown = assert_shields_badge(httpx.get(gateway.url + "/api/badge/model/<script>", timeout=5))
    assert unknown["message"] == "unknown model"


def test_status_and_metrics_tell_the_truth(status_fleet):
    gateway = status_fleet
    for stream in (False, True):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(stream=stream),
                          timeout=10).status_code == 200
    httpx.post(gateway.url + "/v1/chat/completions", json=chat_body("nope"), timeout=5)
    httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(GEMMA), timeout=5)

    status = httpx.get(gateway.url + "/api/status", timeout=5).json()
    models = {m["key"]: m for m in status["models"]}
    assert models[SMOL]["status"] == "online" and models[GEMMA]["status"] == "offline"
    smol = models[SMOL]["instances"][0]
    assert smol["state"] == "ready" and smol["last_probe_latency_ms"] > 0 and smol["tokens_per_second"] == 12.5
    assert smol["uptime_seconds"] > 0 and smol["requests_total"] == 2
    assert models[GEMMA]["instances"][0]["state"] == "unhealthy"

    page = httpx.get(gateway.url + "/status", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f"{SMOL}-0" in page.text and "/api/status" in page.text and "unhealthy" in page.text

    metrics = httpx.get(gateway.url + "/metrics", timeout=5)
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
