"""The admin APIs over HTTP, in-process gateway: the admin key on every page's API, keys with
limits and use, analytics, the audit log, and every bad input answered in OpenAI's error shape."""

from __future__ import annotations

import pytest

from gateway.admin.audit import fingerprint
from tests.gateway.conftest import SMOL, chat_body, wait_ready
from tests.harness import assert_openai_error, wait_until

ADMIN_KEY = "admin-secret-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_GETS = ["/api/admin/session", "/api/admin/keys", "/api/admin/audit", "/api/admin/analytics",
              "/api/admin/analytics/arena"]


@pytest.fixture
def gateway(fake_upstreams, gateway_apps):
    fake = fake_upstreams()
    # Many wrong keys are sent on purpose here; the limit on them has its own test.
    client = gateway_apps({SMOL: [fake.url]}, require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=1000)
    wait_ready(client, f"{SMOL}-0")
    return client


def test_wrong_keys_are_limited_per_client_and_then_even_the_right_one_is_refused(gateway_apps):
    gateway = gateway_apps(require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=3)
    wrong = {"Authorization": "Bearer wrong-guess-0123456789"}
    assert_openai_error(gateway.get("/api/admin/session"), 401, "invalid_admin_key")  # no key: not a guess
    for _ in range(2):
        assert_openai_error(gateway.get("/api/admin/session", headers=wrong), 401, "invalid_admin_key")
    assert_openai_error(gateway.get("/v1/models", headers=wrong), 401, "invalid_api_key")  # the /v1 side counts too
    for response in (gateway.get("/api/admin/session", headers=wrong),
                     gateway.post("/api/admin/session", headers=ADMIN), gateway.get("/v1/models", headers=ADMIN)):
        assert_openai_error(response, 429, "rate_limit_exceeded")
        assert int(response.headers["Retry-After"]) >= 1


def test_the_public_views_that_show_more_to_the_admin_count_wrong_keys_too(gateway_apps):
    # /api/status and /api/instances show instance URLs to the admin key: a guesser could test
    # keys there by looking for the URLs; each wrong key is counted like on the admin routes.
    gateway = gateway_apps(require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=3)
    made = gateway.post("/api/admin/keys", json={"name": "viewer"}, headers=ADMIN).json()
    user = {"Authorization": f"Bearer {made['key']}"}
    for _ in range(5):  # a user's own valid API key is no guess
        assert gateway.get("/api/status", headers=user).status_code == 200
    wrong = {"Authorization": "Bearer wrong-guess-0123456789"}
    for path in ("/api/status", "/api/instances", "/api/instances"):
        answer = gateway.get(path, headers=wrong)
        assert answer.status_code == 200 and "url" not in str(answer.json().get("data", ""))
    for path in ("/api/status", "/api/instances", "/api/admin/session"):
        response = gateway.get(path, headers=ADMIN)  # even the right key, once over the limit
        assert_openai_error(response, 429, "rate_limit_exceeded")
    assert gateway.get("/api/status").status_code == 200  # no key: the public view, never counted


def test_a_valid_api_key_on_a_public_view_is_never_refused_for_the_guesses_of_its_address(gateway_apps):
    # Users behind one address (a tunnel, a NAT) share its count of wrong keys: once a guesser
    # has used it up, a user's own valid key still sees the public views.
    gateway = gateway_apps(require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=2)
    user = {"Authorization": f"Bearer {gateway.post('/api/admin/keys', json={'name': 'u'}, headers=ADMIN).json()['key']}"}
    for _ in range(3):
        gateway.get("/api/status", headers={"Authorization": "Bearer wrong-guess-0123456789"})
    assert_openai_error(gateway.get("/api/status", headers={"Authorization": "Bearer wrong-guess-0123456789"}),
                        429, "rate_limit_exceeded")
    for path in ("/api/status", "/api/instances"):
        assert gateway.get(path, headers=user).status_code == 200
    assert_openai_error(gateway.get("/api/status", headers=ADMIN), 429, "rate_limit_exceeded")


def test_a_key_made_on_another_replica_is_no_guess_on_a_public_view(gateway_apps):
    # Two gateways on one store: a key made on the first is unknown to the second's cache until
    # it looks again; sent to a public view it must not be counted as a wrong key.
    first = gateway_apps(require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=1)
    second = gateway_apps(require_api_key=True, admin_key=ADMIN_KEY, auth_failures_per_minute=1)
    assert second.get("/api/status").status_code == 200  # its cache is loaded before the key exists
    made = first.post("/api/admin/keys", json={"name": "new"}, headers=ADMIN).json()
    assert second.get("/api/status", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 200
    assert second.get("/api/admin/session", headers=ADMIN).status_code == 200  # nothing was counted


def test_an_admin_key_shorter_than_the_minimum_is_refused_at_start(monkeypatch, capsys):
    import argparse

    from pydantic import ValidationError

    from gateway.cli import run
    from gateway.settings import ADMIN_KEY_MIN_LENGTH, GatewaySettings
    from shared.catalogue import load_catalogue

    with pytest.raises(ValidationError):  # (checked first: without the check, `run` would serve)
        GatewaySettings(admin_key="k" * (ADMIN_KEY_MIN_LENGTH - 1))
    assert GatewaySettings(admin_key="k" * ADMIN_KEY_MIN_LENGTH).admin_key
    monkeypatch.setenv("ARENA_GATEWAY_ADMIN_KEY", "k" * (ADMIN_KEY_MIN_LENGTH - 1))
    args = argparse.Namespace(host=None, port=None, log_format=None, log_level=None)
    assert run(args, load_catalogue()) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"at least {ADMIN_KEY_MIN_LENGTH}" in err and "k" * 8 not in err


def test_admin_side_off_without_an_admin_key_says_how_to_turn_it_on(gateway_apps):
    gateway = gateway_apps()
    assert gateway.get("/api/admin/enabled").json()["enabled"] is False
    assert "ARENA_GATEWAY_ADMIN_KEY" in gateway.get("/api/admin/enabled").json()["message"]
    for path in ADMIN_GETS:
        error = assert_openai_error(gateway.get(path, headers=ADMIN), 503, "admin_disabled")
        assert "ARENA_GATEWAY_ADMIN_KEY" in error["message"]


def test_every_admin_api_needs_the_admin_key(gateway):
    assert gateway.get("/api/admin/enabled").json() == {"enabled": True, "message": None}
    made = gateway.post("/api/admin/keys", json={"name": "user"}, headers=ADMIN).json()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {made['key']}"},
                    {"Authorization": f"Basic {ADMIN_KEY}"}):
        for path in ADMIN_GETS:
            assert_openai_error(gateway.get(path, headers=headers), 401, "invalid_admin_key")
        assert_openai_error(gateway.post("/api/admin/keys", json={"name": "x"}, headers=headers), 401)
        assert_openai_error(gateway.patch(f"/api/admin/keys/{made['key_id']}", json={"rpm": 1}, headers=headers), 401)
        assert_openai_error(gateway.delete(f"/api/admin/keys/{made['key_id']}", headers=headers), 401)
        assert_openai_error(gateway.post("/api/admin/session", headers=headers), 401)
    assert gateway.get("/api/admin/session", headers=ADMIN).json()["actor"] == fingerprint(ADMIN_KEY)


def test_pages_are_static_with_a_strict_policy(gateway):
    for path in ("/admin", "/admin/analytics", "/admin/playground"):
        page = gateway.get(path)
        assert page.status_code == 200 and "Admin login" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert ADMIN_KEY not in page.text
    assert gateway.get("/static/admin/js/common.js").status_code == 200


def test_keys_create_limit_use_revoke_and_the_audit_log(gateway):
    gateway.post("/api/admin/session", headers=ADMIN)
    made = gateway.post("/api/admin/keys", json={"name": "web app", "rpm": 0}, headers=ADMIN).json()
    assert made["key"].startswith("sk-arena-") and made["requests"] == 0 and made["last_used_at"] is None
    user = {"Authorization": f"Bearer {made['key']}"}
    for _ in range(2):
        assert gateway.post("/v1/chat/completions", json=chat_body(), headers=user).status_code == 200

    def listed():
        return next(k for k in gateway.get("/api/admin/keys", headers=ADMIN).json()["data"]
                    if k["key_id"] == made["key_id"])

    row = wait_until(lambda: listed()["requests"] == 2 and listed(), timeout=5, what="two requests counted")
    assert row["last_used_at"] >= made["created_at"] and "key" not in row

    limited = gateway.patch(f"/api/admin/keys/{made['key_id']}", json={"rpm": 1}, headers=ADMIN).json()
    assert limited["rpm"] == 1 and limited["requests"] == 2
    assert gateway.post("/v1/chat/completions", json=chat_body(), headers=user).status_code == 200
    assert_openai_error(gateway.post("/v1/chat/completions", json=chat_body(), headers=user), 429,
                        "rate_limit_exceeded")
    assert gateway.patch(f"/api/admin/keys/{made['key_id']}", json={"rpm": None}, headers=ADMIN).json()["rpm"] is None

    assert gateway.delete(f"/api/admin/keys/{made['key_id']}", headers=ADMIN).json()["revoked"] is True
    assert_openai_error(gateway.post("/v1/chat/completions", json=chat_body(), headers=user), 401, "invalid_api_key")

    entries = gateway.get("/api/admin/audit", headers=ADMIN).json()["data"]
    assert [e["action"] for e in entries] == ["key.revoke", "key.limit", "key.limit", "key.create", "login"]
    assert {e["actor"] for e in entries} == {fingerprint(ADMIN_KEY)}
    assert entries[3]["detail"] == {"name": "web app", "rpm": 0} and entries[0]["target"] == made["key_id"]
    assert ADMIN_KEY not in str(entries) and made["key"] not in str(entries)
    assert_openai_error(gateway.get("/api/admin/audit?limit=0", headers=ADMIN), 400, param="query.limit")


BAD_CREATIONS = [
    ({"name": ""}, "name"), ({"name": "   "}, "name"), ({"name": 5}, "name"), ({"name": "x" * 201}, "name"),
    ({"rpm": 1}, "name"), ({"name": "a", "rpm": -1}, "rpm"), ({"name": "a", "rpm": 1.5}, "rpm"),
    ({"name": "a", "rpm": True}, "rpm"), ({"name": "a", "rpm": 10 ** 7}, "rpm"), ({"name": "a", "rpm": "5"}, "rpm"),
]


def test_bad_key_creations_are_refused(gateway):
    for body, param in BAD_CREATIONS:
        assert_openai_error(gateway.post("/api/admin/keys", json=body, headers=ADMIN), 400, "invalid_value", param)
    assert gateway.get("/api/admin/keys", headers=ADMIN).json()["data"] == []


def test_bad_limits_and_unknown_keys_are_refused(gateway):
    made = gateway.post("/api/admin/keys", json={"name": "a"}, headers=ADMIN).json()
    path = f"/api/admin/keys/{made['key_id']}"
    for body, param in (({"rpm": -5}, "rpm"), ({"rpm": 2_000_000}, "rpm"), ({"rpm": "fast"}, "rpm"),
                        ({"rpm": 1, "name": "b"}, "name"), ({}, "rpm")):
        assert_openai_error(gateway.patch(path, json=body, headers=ADMIN), 400, "invalid_value", param)
    assert_openai_error(gateway.patch(path, content=b"not json", headers=ADMIN), 400, "invalid_json")
    assert_openai_error(gateway.patch(path, json=[1], headers=ADMIN), 400, "invalid_json")
    assert_openai_error(gateway.post("/api/admin/keys", content=b"{", headers=ADMIN), 400, "invalid_json")
    bomb = {**ADMIN, "content-type": "application/json"}
    assert_openai_error(gateway.post("/api/admin/keys", content=b"[" * 60_000, headers=bomb), 400, "invalid_json")
    assert_openai_error(gateway.patch(path, content=b"[" * 60_000, headers=bomb), 400, "invalid_json")
    for method in ("patch", "delete"):
        kwargs = {"json": {"rpm": 1}} if method == "patch" else {}
        assert_openai_error(getattr(gateway, method)("/api/admin/keys/key_nope", headers=ADMIN, **kwargs),
                            404, "key_not_found")
    gateway.delete(path, headers=ADMIN)
    assert_openai_error(gateway.delete(path, headers=ADMIN), 404, "key_not_found")  # revoked already
    assert_openai_error(gateway.patch(path, json={"rpm": 1}, headers=ADMIN), 404, "key_not_found")


def test_analytics_of_proxied_requests_and_bad_ranges(gateway):
    made = gateway.post("/api/admin/keys", json={"name": "a"}, headers=ADMIN).json()
    user = {"Authorization": f"Bearer {made['key']}"}
    assert gateway.post("/v1/chat/completions", json=chat_body(stream=True), headers=user).status_code == 200
    assert gateway.post("/v1/chat/completions", json=chat_body(), headers=user).status_code == 200

    def totals():
        data = gateway.get("/api/admin/analytics?resolution=minute&hours=1", headers=ADMIN).json()
        return data["totals"].get(SMOL, {}).get("requests") == 2 and data

    data = wait_until(totals, timeout=5, what="two requests in the analytics")
    point = data["totals"][SMOL]
    assert point["errors"] == 0 and point["completion_tokens"] > 0 and point["ttft_ms"] is not None
    assert len(data["periods"]) in (61, 62) and data["series"][SMOL][-1] is not None
    by_hour = gateway.get("/api/admin/analytics?resolution=hour&hours=24&by=instance", headers=ADMIN).json()
    assert by_hour["totals"][f"{SMOL}/{SMOL}-0"]["requests"] == 2
    arena = gateway.get("/api/admin/analytics/arena?days=7", headers=ADMIN).json()
    assert len(arena["days"]) == 7 and arena["battles"] == [0] * 7

    for query, param in (("resolution=second", "resolution"), ("hours=0", "hours"), ("hours=abc", "hours"),
                         ("resolution=minute&hours=5", "hours"), ("resolution=hour&hours=100000", "hours"),
                         ("by=key", "by")):
        assert_openai_error(gateway.get(f"/api/admin/analytics?{query}", headers=ADMIN), 400, param=f"query.{param}")
    for days in ("0", "367", "x"):
        assert_openai_error(gateway.get(f"/api/admin/analytics/arena?days={days}", headers=ADMIN), 400, param="query.days")


def test_the_arenas_admin_actions_are_audited_too(gateway):
    path = "/api/admin/arena/excluded-clients"
    assert gateway.post(path, json={"client": "addr:10.0.0.9", "reason": "flood"}, headers=ADMIN).status_code == 201
    assert gateway.delete(f"{path}/addr:10.0.0.9", headers=ADMIN).status_code == 200
    assert_openai_error(gateway.delete(f"{path}/addr:10.0.0.9", headers=ADMIN), 404)  # refused: not audited
    entries = gateway.get("/api/admin/audit", headers=ADMIN).json()["data"]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("arena.include_client", "addr:10.0.0.9"), ("arena.exclude_client", "addr:10.0.0.9")]
    assert entries[1]["detail"] == {"reason": "flood"} and entries[0]["actor"] == fingerprint(ADMIN_KEY)
