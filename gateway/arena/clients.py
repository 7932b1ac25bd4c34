"""Who is voting: one id per client, and per-client limits on opening battles and voting.

A client is its API key when the gateway requires keys, otherwise its address. Behind a tunnel
or a reverse proxy every request comes from the proxy, so the address is taken from
X-Forwarded-For, but only when the connection comes from one of the catalogue's
`arena.trusted_proxies` (anyone else could write any address there): the right-most address
that is not itself a trusted proxy is the client.

An IPv6 client is its /64, not its address: one host (one home or one cloud machine) is handed
a whole /64 and can rotate through its 2^64 addresses freely, which would escape every
per-client limit. An IPv4 client (an IPv4-mapped IPv6 address included) is its address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Iterable

from fastapi import Request

from gateway.keys import RateLimiter
from shared.catalogue import ArenaPolicy
from shared.errors import ApiError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip()]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


IPV6_CLIENT_PREFIX = 64


def client_network(address: str) -> str:
    """The unit a client is counted as: an IPv4 address, or an IPv6 address's /64 (text that is
    no address, such as "unknown", stays as it is)."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed) if parsed is not None else address


class ClientIdentifier:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = _networks(trusted_proxies)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: `peer`, or from X-Forwarded-For when `peer` is a trusted proxy."""
        peer_address = _address(peer or "")
        if not self._is_trusted(peer_address) or not forwarded_for:
            return peer or "unknown"
        for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
            hop_address = _address(hop)
            if hop_address is None:
                break  # a malformed hop: believe nothing further left
            if not self._is_trusted(hop_address):
                return str(hop_address)
        return peer or "unknown"

    def client_id(self, request: Request) -> str:
        key = getattr(request.state, "api_key", None)
        if key is not None:
            return f"key:{key.key_id}"
        peer = request.client.host if request.client else None
        return "addr:" + client_network(self.address(peer, request.headers.get("x-forwarded-for")))


class ClientLimits:
    """Battles opened, votes cast and mode sessions started per client per minute (limits from
    the catalogue), counted in the store by the gateway's `RateLimiter`, so that replicas share them."""

    WHAT = {"battle": "battles opened", "vote": "votes", "session": "sessions started", "share": "share links"}

    def __init__(self, policy: ArenaPolicy, limiter: RateLimiter) -> None:
        self.policy = policy
        self.limiter = limiter

    @staticmethod
    def window_key(action: str, client: str) -> str:
        key = f"arena-{action}:{client}"
        return key if len(key) <= 64 else f"arena-{action}:" + hashlib.sha256(client.encode()).hexdigest()[:40]

    async def check(self, action: str, client: str) -> None:
        """Count one `action` ("battle", "vote", "session", or "share", which counts like votes) of
        `client`; 429 over its limit."""
        per_minute = {"battle": self.policy.battles_per_minute, "vote": self.policy.votes_per_minute,
                      "session": self.policy.sessions_per_minute,
                      "share": self.policy.votes_per_minute}[action]
        wait = await self.limiter.check(self.window_key(action, client), per_minute)
        if wait is not None:
            retry = RateLimiter.retry_after_header(wait)
            raise ApiError(429, f"Too many {self.WHAT[action]} from this client: at most {per_minute} a minute. "
                                f"Try again in {retry}s.", code="rate_limit_exceeded", headers={"Retry-After": retry})
