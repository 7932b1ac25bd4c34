"""`setup_tunnels` against a stateful respx fake of Cloudflare's API (real paths and envelopes).

The fake follows Cloudflare's API reference (developers.cloudflare.com/api): the v4 envelope
`{success, errors, messages, result, result_info}`; `cfd_tunnel` list/create/token/configurations;
zones listed by name, where a token without Zone > Zone: Read simply sees no zone; DNS records
listed by name, created, patched and deleted, and a CNAME refused beside an A, AAAA or CNAME of the
same name (error 81053, "An A, AAAA, or CNAME record with that host already exists.", documented
under DNS troubleshooting, "Records with the same name"); 429 with `Retry-After` over the API's
rate limit (1,200 requests per five minutes, "API rate limits").
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest
import respx

from scripts import setup_tunnels
from scripts.cloudflare_api import API_URL, CloudflareAuthError, CloudflareClient, CloudflareError
from shared.catalogue import load_catalogue

ACCOUNT = "699d98642c564d2e855e9661899b7252"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
DOMAIN = "example.com"
API_TOKEN = "cf-api-token-abcdefghijklmnop"
NO_ZONE_READ_TOKEN = "cf-token-without-zone-read"


def envelope(result, status=200, result_info=None, success=True, errors=()):
    body = {"success": success, "errors": list(errors), "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return httpx.Response(status, json=body)


class FakeCloudflare:
    """Tunnels, configurations and DNS records kept in memory; pages of `page_size` items."""

    def __init__(self, page_size: int = 2) -> None:
        self.page_size = page_size
        self.tunnels: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.records: dict[str, dict] = {}
        self.writes: list[str] = []
        self.fail_next: list[httpx.Response] = []
        # Unrelated tunnels and records on the same account, so lists have several pages.
        for name in ("blog", "arena-smollm2-135m-old", "nas"):
            self._new_tunnel(name)

    def _new_tunnel(self, name: str) -> dict:
        tid = str(uuid.uuid4())
        self.tunnels[tid] = {"id": tid, "account_tag": ACCOUNT, "name": name, "created_at": "2026-11-22T00:00:00Z",
                             "deleted_at": None, "connections": [], "status": "inactive", "remote_config": True,
                             "tun_type": "cfd_tunnel", "metadata": {}}
        return self.tunnels[tid]

    def _page(self, request: httpx.Request, items: list[dict]) -> httpx.Response:
        page = int(request.url.params.get("page", 1))
        size = min(int(request.url.params.get("per_page", 50)), self.page_size)
        chunk = items[(page - 1) * size: page * size]
        pages = max(1, -(-len(items) // size))
        return envelope(chunk, result_info={"page": page, "per_page": size, "count": len(chunk),
                                            "total_count": len(items), "total_pages": pages})

    def _cname_conflict(self, record: dict, record_id: str | None) -> httpx.Response | None:
        others = [r for rid, r in self.records.items() if rid != record_id and r["name"] == record["name"]]
        if (record["type"] == "CNAME" and any(r["type"] in ("A", "AAAA", "CNAME") for r in others)) or \
                (record["type"] in ("A", "AAAA") and any(r["type"] == "CNAME" for r in others)):
            return envelope(None, 400, success=False, errors=[
                {"code": 81053, "message": "An A, AAAA, or CNAME record with that host already exists."}])
        return None

    def add_record(self, type_: str, name: str, content: str, proxied: bool = False) -> dict:
        rid = uuid.uuid4().hex
        self.records[rid] = {"id": rid, "type": type_, "name": name, "content": content, "proxied": proxied, "ttl": 1}
        return self.records[rid]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fail_next:
            return self.fail_next.pop(0)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in (API_TOKEN, NO_ZONE_READ_TOKEN):
            return envelope(None, 403, success=False, errors=[{"code": 10000, "message": "Authentication error"}])
        path, method = request.url.path.removeprefix("/client/v4"), request.method
        if method != "GET":
            self.writes.append(f"{method} {path}")
        body = json.loads(request.content) if request.content else {}
        if path == f"/accounts/{ACCOUNT}/cfd_tunnel":
            if method == "POST":
                assert body["config_src"] == "cloudflare"
                tunnel = self._new_tunnel(body["name"])
                return envelope({**tunnel, "token": f"token-{tunnel['id']}"})
            name = request.url.params.get("name")
            return self._page(request, [t for t in self.tunnels.values() if name is None or t["name"] == name])
        if m := re.fullmatch(rf"/accounts/{ACCOUNT}/cfd_tunnel/([\w-]+)/token", path):
            return envelope(f"token-{m.group(1)}")
        if m := re.fullmatch(rf"/accounts/{ACCOUNT}/cfd_tunnel/([\w-]+)/configurations", path):
            tid = m.group(1)
            if method == "PUT":
                self.configs[tid] = body["config"]
            return envelope({"tunnel_id": tid, "account_id": ACCOUNT, "version": len(self.writes),
                             "config": self.configs.get(tid, {}), "source": "cloudflare",
                             "created_at": "2026-11-22T00:00:00Z"})
        if path == "/zones":
            zones = [{"id": ZONE, "name": DOMAIN, "status": "active"}, {"id": "z2", "name": "other.org"}]
            if token == NO_ZONE_READ_TOKEN:
                zones = []          # not refused: zones the token may not read are left out
            return self._page(request, [z for z in zones if z["name"] == request.url.params.get("name")])
        if path == f"/zones/{ZONE}/dns_records":
            if method == "POST":
                if refused := self._cname_conflict(body, None):
                    return refused
                rid = uuid.uuid4().hex
                self.records[rid] = {"id": rid, **body}
                return envelope(self.records[rid])
            name = request.url.params.get("name")
            return self._page(request, [r for r in self.records.values() if r["name"] == name])
        if m := re.fullmatch(rf"/zones/{ZONE}/dns_records/(\w+)", path):
            if m.group(1) not in self.records:
                return envelope(None, 404, success=False, errors=[{"code": 81044, "message": "Record does not exist."}])
            if method == "DELETE":
                del self.records[m.group(1)]
                return envelope({"id": m.group(1)})
            if refused := self._cname_conflict({**self.records[m.group(1)], **body}, m.group(1)):
                return refused
            self.records[m.group(1)].update(body)
            return envelope(self.records[m.group(1)])
        return envelope(None, 404, success=False, errors=[{"code": 7003, "message": "No route for that URI"}])


@pytest.fixture
def fake():
    cf = FakeCloudflare()
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=API_URL).mock(side_effect=cf.handle)
        cf.router = router
        yield cf


def client() -> CloudflareClient:
    return CloudflareClient(API_TOKEN, ACCOUNT, backoff=0)


def wanted():
    return setup_tunnels.targets(load_catalogue(), DOMAIN)


def test_first_run_creates_everything_and_second_run_changes_nothing(fake):
    plan = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    keys = set(load_catalogue().models) | {"gateway"}
    assert set(plan.tunnels) == keys
    ours = {t["name"]: tid for tid, t in fake.tunnels.items() if t["name"].startswith("arena-")}
    assert set(ours) == {f"arena-{k}" for k in keys} | {"arena-smollm2-135m-old"}
    gw_id = ours["arena-gateway"]
    assert fake.configs[gw_id]["ingress"][0] == {"hostname": f"arena.{DOMAIN}", "service": "http://127.0.0.1:8080"}
    assert fake.configs[gw_id]["ingress"][-1] == {"service": "http_status:404"}
    assert plan.tunnels["gateway"] == {"token": f"token-{gw_id}", "hostname": f"arena.{DOMAIN}"}
    cname = [r for r in fake.records.values() if r["name"] == f"smollm2-135m.{DOMAIN}"]
    assert cname and cname[0]["content"] == f"{ours['arena-smollm2-135m']}.cfargotunnel.com" and cname[0]["proxied"]
    assert ours["arena-smollm2-135m-old"] not in fake.configs   # exact names: the look-alike is untouched

    writes = len(fake.writes)
    again = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    assert len(fake.writes) == writes, fake.writes[writes:]
    assert again.steps == [] and again.tunnels == plan.tunnels


def test_dry_run_reads_only(fake):
    plan = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=True)
    assert fake.writes == []
    assert any(step.startswith("create tunnel arena-gateway") for step in plan.steps)


def test_a_drifted_record_and_ingress_are_repaired(fake):
    setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    record = next(r for r in fake.records.values() if r["name"] == f"arena.{DOMAIN}")
    record.update(content="elsewhere.example.net", proxied=False)
    gw_id = next(tid for tid, t in fake.tunnels.items() if t["name"] == "arena-gateway")
    fake.configs[gw_id] = {"ingress": [{"service": "http_status:404"}]}
    fake.writes.clear()
    plan = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    assert sorted(w.split()[0] for w in fake.writes) == ["PATCH", "PUT"]
    assert record["content"] == f"{gw_id}.cfargotunnel.com" and record["proxied"] is True
    assert len(plan.steps) == 2


def test_rate_limits_and_server_errors_are_retried(fake):
    fake.fail_next = [httpx.Response(429, headers={"retry-after": "0"}, json={"success": False, "errors": [
        {"code": 971, "message": "Please wait and consider throttling your request speed"}]}),
        httpx.Response(502, text="bad gateway")]
    plan = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=True)
    assert plan.steps and fake.fail_next == []


def test_bad_token_fails_clearly_without_printing_it(fake, monkeypatch, capsys):
    with pytest.raises(CloudflareAuthError, match="Cloudflare Tunnel: Edit"):
        CloudflareClient("wrong-token-000000", ACCOUNT, backoff=0).zone_id(DOMAIN)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong-token-000000")
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    assert setup_tunnels.main([DOMAIN]) == 1
    out = capsys.readouterr()
    assert "Authentication error" in out.err and "wrong-token-000000" not in out.err + out.out
    assert fake.writes == []


def test_main_prints_tunnels_json_without_a_github_token(fake, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    for name in ("WORKFLOW_PAT", "GITHUB_TOKEN", "GH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))          # no gh login to borrow either
    assert setup_tunnels.main([DOMAIN]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("TUNNELS_JSON="))
    assert set(json.loads(line.split("=", 1)[1])) == set(load_catalogue().models) | {"gateway"}
    assert setup_tunnels.main([DOMAIN, "--dry-run"]) == 0
    assert "nothing to change" in capsys.readouterr().out


def test_tunnels_json_is_stored_sealed_through_githubs_rest_api(fake, monkeypatch, capsys):
    from tests.fleet.fake_github import FakeGitHub

    github = FakeGitHub("o/r", "ghp_setup0000000000")
    fake_route = fake.router.route(host="api.github.com").mock(side_effect=github.handle)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("GH_TOKEN", "ghp_setup0000000000")
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    assert setup_tunnels.main([DOMAIN]) == 0
    out = capsys.readouterr().out
    assert "TUNNELS_JSON=" not in out and "stored TUNNELS_JSON as a secret of o/r" in out
    assert fake_route.called
    stored = json.loads(github.secrets["TUNNELS_JSON"])
    assert set(stored) == set(load_catalogue().models) | {"gateway"}
    assert all(entry["token"] not in out for entry in stored.values())
def test_a_dual_stack_host_becomes_one_cname(fake):
    """A hostname with an A and an AAAA record: both go, then the CNAME can be made (Cloudflare
    refuses a CNAME beside either; before, only the first record was patched, and refused)."""
    name = f"smollm2-135m.{DOMAIN}"
    fake.add_record("A", name, "192.0.2.10")
    fake.add_record("AAAA", name, "2001:db8::10")
    fake.add_record("TXT", name, "keep me")
    plan = setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    records = sorted((r["type"], r["content"]) for r in fake.records.values() if r["name"] == name)
    tunnel_id = next(tid for tid, t in fake.tunnels.items() if t["name"] == "arena-smollm2-135m")
    assert records == [("CNAME", f"{tunnel_id}.cfargotunnel.com"), ("TXT", "keep me")]
    assert any(step.startswith(f"deleted A {name}") for step in plan.steps)
    assert any(step.startswith(f"deleted AAAA {name}") for step in plan.steps)
    fake.writes.clear()
    setup_tunnels.reconcile(client(), DOMAIN, wanted(), dry_run=False)
    assert fake.writes == []


def test_a_token_without_zone_read_is_told_so(fake):
    with pytest.raises(CloudflareError, match="Zone > Zone: Read"):
        CloudflareClient(NO_ZONE_READ_TOKEN, ACCOUNT, backoff=0).zone_id(DOMAIN)
