"""A small client of Cloudflare's v4 API: tunnels (cfd_tunnel), their configuration, zones, DNS.

Every answer is Cloudflare's envelope ``{"success", "errors", "messages", "result",
"result_info"}``; lists are read page by page from ``result_info.total_pages``. 429 (the API's
global limit, 1,200 requests per five minutes per user, developers.cloudflare.com/fundamentals/
api/reference/limits/) and 5xx are retried through the fleet's one scaffold
(`scripts/retrying.py`), honouring `Retry-After`; a bad token fails at once, naming the
permissions the token needs.
"""

from __future__ import annotations

from typing import Any

import httpx

from scripts.retrying import RetryPolicy, TransientError

API_URL = "https://api.cloudflare.com/client/v4"
TOKEN_PERMISSIONS = ("Account > Cloudflare Tunnel: Edit, Zone > Zone: Read and Zone > DNS: Edit")


class CloudflareError(RuntimeError):
    pass


class CloudflareAuthError(CloudflareError):
    pass


class CloudflareTransientError(TransientError, CloudflareError):
    pass


def _errors(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    errors = body.get("errors") or []
    return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.text[:200]


class CloudflareClient:
    def __init__(self, token: str, account_id: str, *, api_url: str = API_URL,
                 transport: httpx.BaseTransport | None = None, attempts: int = 5, backoff: float = 1.0,
                 max_wait: float = 60.0) -> None:
        if not token:
            raise CloudflareAuthError("no Cloudflare API token: set CLOUDFLARE_API_TOKEN")
        if not account_id:
            raise CloudflareError("no Cloudflare account: set CLOUDFLARE_ACCOUNT_ID")
        self.account_id = account_id
        self.retry = RetryPolicy(attempts=attempts, backoff=backoff, max_wait=max_wait)
        self.writes = 0
        self._http = httpx.Client(base_url=api_url, transport=transport, timeout=30.0,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self.retry.call(lambda: self._call_once(method, path, **kwargs))

    def _call_once(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CloudflareTransientError(f"{method} {path}: {type(exc).__name__}") from exc
        what = f"Cloudflare {method} {path} -> {response.status_code}"
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            raise CloudflareTransientError(f"{what}: {_errors(response)}",
                                           float(retry_after) if retry_after and retry_after.isdigit() else None)
        if response.status_code in (401, 403):
            raise CloudflareAuthError(
                f"{what}: {_errors(response)}. CLOUDFLARE_API_TOKEN needs {TOKEN_PERMISSIONS}, "
                "and CLOUDFLARE_ACCOUNT_ID must be its account.")
        try:
            body = response.json()
        except ValueError:
            raise CloudflareError(f"{what}: not JSON") from None
        if response.status_code >= 400 or not body.get("success", False):
            raise CloudflareError(f"{what}: {_errors(response)}")
        if method != "GET":
            self.writes += 1
        return body

    def _list(self, path: str, params: dict[str, Any], max_pages: int = 50) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while page <= max_pages:
            body = self._call("GET", path, params={**params, "page": page, "per_page": 50})
            items.extend(body.get("result") or [])
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1):
                break
            page += 1
        return items

    # -- tunnels -----------------------------------------------------------------------------

    def tunnels_named(self, name: str) -> list[dict[str, Any]]:
        found = self._list(f"/accounts/{self.account_id}/cfd_tunnel", {"name": name, "is_deleted": "false"})
        return [t for t in found if t.get("name") == name and not t.get("deleted_at")]

    def create_tunnel(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/accounts/{self.account_id}/cfd_tunnel",
                          json={"name": name, "config_src": "cloudflare"})["result"]

    def tunnel_token(self, tunnel_id: str) -> str:
        return str(self._call("GET", f"/accounts/{self.account_id}/cfd_tunnel/{tunnel_id}/token")["result"])

    def tunnel_configuration(self, tunnel_id: str) -> dict[str, Any]:
        result = self._call("GET", f"/accounts/{self.account_id}/cfd_tunnel/{tunnel_id}/configurations")["result"]
        return (result or {}).get("config") or {}

    def put_tunnel_configuration(self, tunnel_id: str, config: dict[str, Any]) -> None:
        self._call("PUT", f"/accounts/{self.account_id}/cfd_tunnel/{tunnel_id}/configurations",
                   json={"config": config})

    # -- zones and DNS -----------------------------------------------------------------------

    def zone_id(self, domain: str) -> str:
        # A token without Zone > Zone: Read is not refused here: the list simply leaves out the
        # zones it may not read, so an empty answer may be a missing permission.
        zones = [z for z in self._list("/zones", {"name": domain}) if z.get("name") == domain]
        if not zones:
            raise CloudflareError(
                f"no zone named {domain} is visible to CLOUDFLARE_API_TOKEN: either the zone is not on this "
                f"account, or the token lacks Zone > Zone: Read for it (it needs {TOKEN_PERMISSIONS})")
        return str(zones[0]["id"])

    def dns_records(self, zone_id: str, name: str) -> list[dict[str, Any]]:
        return [r for r in self._list(f"/zones/{zone_id}/dns_records", {"name": name}) if r.get("name") == name]

    def create_cname(self, zone_id: str, name: str, target: str) -> None:
        self._call("POST", f"/zones/{zone_id}/dns_records", json={
            "type": "CNAME", "name": name, "content": target, "proxied": True, "ttl": 1,
            "comment": "serverless-llm-arena tunnel"})

    def update_cname(self, zone_id: str, record_id: str, name: str, target: str) -> None:
        self._call("PATCH", f"/zones/{zone_id}/dns_records/{record_id}", json={
            "type": "CNAME", "name": name, "content": target, "proxied": True, "ttl": 1})

    def delete_record(self, zone_id: str, record_id: str) -> None:
        self._call("DELETE", f"/zones/{zone_id}/dns_records/{record_id}")
