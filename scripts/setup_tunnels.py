"""`make setup-tunnels DOMAIN=example.com`: one named Cloudflare Tunnel per model and one for
the gateway, each with its ingress and a proxied DNS CNAME, then `TUNNELS_JSON`.

    CLOUDFLARE_API_TOKEN=... CLOUDFLARE_ACCOUNT_ID=... python -m scripts.setup_tunnels example.com [--dry-run]

Idempotent: it finds tunnels by exact name (`arena-<model>`, `arena-gateway`), compares the
ingress and DNS it wants with what exists, and writes only differences, so a second run
changes nothing. With a GitHub token (as for `make fleet-up`), `TUNNELS_JSON` is stored as a
repository secret through GitHub's REST API; otherwise it is printed. `--dry-run` reads and prints
the plan without writing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

from scripts.cloudflare_api import CloudflareClient, CloudflareError
from scripts.fleet_labels import GATEWAY_LABEL
from scripts.github_api import GitHubError

TUNNEL_PREFIX = "arena-"


@dataclass(frozen=True)
class TunnelTarget:
    key: str             # a model key, or "gateway"
    hostname: str        # the full public hostname
    port: int

    @property
    def tunnel_name(self) -> str:
        return TUNNEL_PREFIX + self.key

    def ingress(self) -> dict:
        return {"ingress": [{"hostname": self.hostname, "service": f"http://127.0.0.1:{self.port}"},
                            {"service": "http_status:404"}]}


@dataclass
class Plan:
    steps: list[str] = field(default_factory=list)
    tunnels: dict[str, dict] = field(default_factory=dict)   # key -> {"token", "hostname"}

    def add(self, text: str) -> None:
        self.steps.append(text)


def targets(catalogue, domain: str) -> list[TunnelTarget]:
    found = [TunnelTarget(key, f"{spec.hostname}.{domain}", spec.port) for key, spec in catalogue.models.items()]
    fleet = catalogue.fleet
    found.append(TunnelTarget(GATEWAY_LABEL, f"{fleet.gateway_hostname}.{domain}", fleet.gateway_port))
    return found


def _ingress_matches(current: dict, wanted: dict) -> bool:
    def essential(config: dict) -> list:
        return [(rule.get("hostname"), rule.get("service")) for rule in config.get("ingress") or []]
    return essential(current) == essential(wanted)


# Cloudflare refuses a CNAME beside an A, AAAA or another CNAME of the same name (error 81053,
# developers.cloudflare.com/dns/manage-dns-records/troubleshooting/records-with-same-name/).
CONFLICTS_WITH_CNAME = {"A", "AAAA", "CNAME"}


def _reconcile_dns(cf: CloudflareClient, zone_id: str, hostname: str, cname: str, plan: Plan, *,
                   dry_run: bool) -> None:
    """Make `hostname` exactly one proxied CNAME to `cname`: every A and AAAA record of the name
    (a dual-stack host has one of each) and any extra CNAME go first, or the CNAME is refused."""
    records = [r for r in cf.dns_records(zone_id, hostname) if r.get("type") in CONFLICTS_WITH_CNAME]
    keep = next((r for r in records if r.get("type") == "CNAME"), None)
    for record in records:
        if record is keep:
            continue
        plan.add(f"{'delete' if dry_run else 'deleted'} {record.get('type')} {hostname} -> {record.get('content')}")
        if not dry_run:
            cf.delete_record(zone_id, str(record["id"]))
    if keep is None:
        plan.add(f"{'create' if dry_run else 'created'} CNAME {hostname} -> {cname} (proxied)")
        if not dry_run:
            cf.create_cname(zone_id, hostname, cname)
    elif keep.get("content") != cname or not keep.get("proxied"):
        plan.add(f"{'update' if dry_run else 'updated'} CNAME {hostname}: {keep.get('content')} -> {cname} (proxied)")
        if not dry_run:
            cf.update_cname(zone_id, str(keep["id"]), hostname, cname)


def reconcile(cf: CloudflareClient, domain: str, wanted: list[TunnelTarget], *, dry_run: bool) -> Plan:
    plan = Plan()
    zone_id = cf.zone_id(domain)
    for target in wanted:
        existing = cf.tunnels_named(target.tunnel_name)
        if len(existing) > 1:
            raise CloudflareError(f"{len(existing)} tunnels are named {target.tunnel_name}; delete all but one")
        if existing:
            tunnel_id = str(existing[0]["id"])
        elif dry_run:
            plan.add(f"create tunnel {target.tunnel_name}")
            plan.add(f"set ingress of {target.tunnel_name}: {target.hostname} -> http://127.0.0.1:{target.port}")
            plan.add(f"create CNAME {target.hostname} -> <new tunnel>.cfargotunnel.com (proxied)")
            continue
        else:
            tunnel_id = str(cf.create_tunnel(target.tunnel_name)["id"])
            plan.add(f"created tunnel {target.tunnel_name} ({tunnel_id})")

        if not _ingress_matches(cf.tunnel_configuration(tunnel_id), target.ingress()):
            plan.add(f"{'set' if dry_run else 'did set'} ingress of {target.tunnel_name}: "
                     f"{target.hostname} -> http://127.0.0.1:{target.port}")
            if not dry_run:
                cf.put_tunnel_configuration(tunnel_id, target.ingress())

        _reconcile_dns(cf, zone_id, target.hostname, f"{tunnel_id}.cfargotunnel.com", plan, dry_run=dry_run)
        if not dry_run:
            plan.tunnels[target.key] = {"token": cf.tunnel_token(tunnel_id), "hostname": target.hostname}
    return plan


def store_secret(tunnels_json: str) -> str | None:
    """Store `TUNNELS_JSON` as a repository secret; None when there is no GitHub token to do it
    with, else the repository it went to."""
    from scripts.fleet_ctl import client

    try:
        gh = client(os.environ)
    except GitHubError:
        return None
    with gh:
        gh.set_secret("TUNNELS_JSON", tunnels_json)
        return gh.repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.setup_tunnels", description=__doc__.split("\n")[0])
    parser.add_argument("domain", help="a zone of the Cloudflare account, e.g. example.com")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    parser.add_argument("--print", dest="print_json", action="store_true",
                        help="print TUNNELS_JSON instead of storing it as a repository secret")
    args = parser.parse_args(argv)

    from shared.catalogue import load_catalogue

    try:
        cf = CloudflareClient(os.environ.get("CLOUDFLARE_API_TOKEN", ""), os.environ.get("CLOUDFLARE_ACCOUNT_ID", ""))
        try:
            plan = reconcile(cf, args.domain, targets(load_catalogue(), args.domain), dry_run=args.dry_run)
        finally:
            cf.close()
    except CloudflareError as exc:
        print(f"setup-tunnels: {exc}", file=sys.stderr)
        return 1
    for step in plan.steps:
        print(("plan: " if args.dry_run else "") + step)
    if not plan.steps:
        print("nothing to change: every tunnel, ingress and DNS record is as wanted")
    if args.dry_run:
        return 0
    tunnels_json = json.dumps(plan.tunnels, sort_keys=True)
    try:
        stored = None if args.print_json else store_secret(tunnels_json)
    except GitHubError as exc:
        print(f"setup-tunnels: could not store TUNNELS_JSON as a repository secret: {exc}", file=sys.stderr)
        stored = None
    if stored:
        print(f"stored TUNNELS_JSON as a secret of {stored}")
    else:
        print(f"TUNNELS_JSON={tunnels_json}")
    gateway = plan.tunnels.get(GATEWAY_LABEL, {}).get("hostname")
    if gateway:
        print(f"set the repository variable ARENA_GATEWAY_URL=https://{gateway} "
              "(Settings > Secrets and variables > Actions > Variables)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
