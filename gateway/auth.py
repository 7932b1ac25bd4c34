"""Who may call what: API keys on `/v1/*`, the registration token, the admin key.

`require_api_key` is a FastAPI dependency any router can use (the arena applies it to its own
APIs); it reads the `ApiKeyGuard` on `app.state.key_guard`. Keys are checked against the
in-memory `KeyCache`; only a key with a per-minute limit touches the store (its shared count).

Guessing the admin key is held back: `AuthFailures` counts each client's wrong admin keys (and
wrong API keys, through which the admin key could be tried too) in the store's rate windows,
shared by replicas (a client is its address, an IPv6 one's /64); a client over
`GatewaySettings.auth_failures_per_minute` gets a 429 before its key is even compared.

`verify_admin` is the one check of the admin key, for every caller: the admin routes
(`require_admin`), the public views that show more to the admin (`/api/status`,
`/api/instances`: `admin_view`) and the API-key guard (the admin key is also an API key). It
compares in constant time, answers 429 to a client over its limit before comparing, and counts
every wrong key, so no route lets a guesser try keys unlimited.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from gateway.arena.clients import ClientIdentifier, ClientLimits, client_network
from gateway.keys import ApiKey, KeyCache, RateLimiter
from gateway.store import DatabaseUnavailable
from shared.errors import ApiError

ADMIN_KEY_ID = "admin"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _same(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


class AuthFailures:
    """Wrong keys per client per minute: past `per_minute` of them the client is refused (429)."""

    def __init__(self, limiter: RateLimiter, clients: ClientIdentifier, per_minute: int) -> None:
        self.limiter = limiter
        self.clients = clients
        self.per_minute = per_minute

    def _window(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        client = "addr:" + client_network(self.clients.address(peer, request.headers.get("x-forwarded-for")))
        return ClientLimits.window_key("auth-failure", client)

    def _refuse(self, wait: float) -> ApiError:
        retry = RateLimiter.retry_after_header(wait)
        return ApiError(429, f"Too many wrong keys from this client: at most {self.per_minute} a minute. "
                             f"Try again in {retry}s.", code="rate_limit_exceeded", headers={"Retry-After": retry})

    async def over_limit(self, request: Request) -> ApiError | None:
        """The 429 to answer while the client is over its limit of wrong keys, else None (nothing
        is counted). Raises `DatabaseUnavailable` when the store is down."""
        wait = await self.limiter.peek(self._window(request), self.per_minute)
        return None if wait is None else self._refuse(wait)

    async def count(self, request: Request) -> ApiError | None:
        """Count one wrong key: the 429 to answer past the limit, else None. Raises
        `DatabaseUnavailable` when the store is down."""
        wait = await self.limiter.check(self._window(request), self.per_minute)
        return None if wait is None else self._refuse(wait)

    async def check_allowed(self, request: Request) -> None:
        """429 while the client is over its limit of wrong keys (nothing is counted)."""
        try:
            refused = await self.over_limit(request)
        except DatabaseUnavailable as exc:
            raise exc.api_error() from None
        if refused is not None:
            raise refused

    async def failed(self, request: Request, error: ApiError) -> ApiError:
        """Count one wrong key; the error to answer: `error`, or a 429 past the limit."""
        try:
            refused = await self.count(request)
        except DatabaseUnavailable as exc:
            return exc.api_error()
        return error if refused is None else refused


class ApiKeyGuard:
    def __init__(self, keys: KeyCache, limiter: RateLimiter, *, required: bool, default_rpm: int,
                 admin_key: str | None, failures: AuthFailures) -> None:
        self.keys = keys
        self.limiter = limiter
        self.required = required
        self.default_rpm = default_rpm
        self.admin_key = admin_key
        self.failures = failures

    async def check(self, request: Request) -> ApiKey | None:
        """The caller's key (None when keys are off); 401 without a valid one, 429 over its limit."""
        if not self.required:
            return None
        token = bearer_token(request)
        if token is None:
            raise ApiError(401, "An API key is required: send 'Authorization: Bearer <key>'.",
                           code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        if await _admin_key_matches(request, self.admin_key, token, self.failures):
            return ApiKey(ADMIN_KEY_ID, "admin", "admin", None, 0.0, None)
        key = await self.lookup(token)
        if key is None:
            raise await self.failures.failed(request, ApiError(
                401, "The API key is not valid (unknown or revoked).", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"}))
        rpm = key.rpm if key.rpm is not None else self.default_rpm
        try:
            wait = await self.limiter.check(key.key_id, rpm)
        except DatabaseUnavailable as exc:
            raise exc.api_error() from None
        if wait is not None:
            retry_after = RateLimiter.retry_after_header(wait)
            raise ApiError(429, f"Rate limit of {rpm} requests per minute reached for this key; "
                                f"retry in {retry_after}s.", code="rate_limit_exceeded",
                           headers={"Retry-After": retry_after})
        return key

    async def lookup(self, token: str) -> ApiKey | None:
        """The valid API key `token` is, if any; a key unknown here is looked up again in the store
        (it may have just been made on another replica)."""
        key = self.keys.get(token)
        if key is None and await self._reloaded():
            key = self.keys.get(token)
        return key

    async def _reloaded(self) -> bool:
        """A key unknown here may be new: reload the keys (rate-limited by the cache)."""
        try:
            await self.keys.refresh_after_miss()
        except DatabaseUnavailable:
            return False
        return True


async def require_api_key(request: Request) -> ApiKey | None:
    """FastAPI dependency: the caller's API key, when the gateway requires keys."""
    key = await request.app.state.key_guard.check(request)
    request.state.api_key = key
    return key


async def _admin_key_matches(request: Request, admin_key: str | None, token: str | None,
                             failures: AuthFailures) -> bool:
    """`token` is the admin key (constant-time). A client over its limit of wrong keys gets a 429
    instead of True: a guesser must not learn that it guessed right. Nothing is counted here."""
    if not admin_key or token is None or not _same(admin_key, token):
        return False
    await failures.check_allowed(request)
    return True


async def verify_admin(request: Request, *, required: bool = True) -> bool:
    """Whether the caller presented the admin key: the one check every caller uses.

    `required`: an admin route; no admin key configured is a 503, a missing or wrong key a 401
    (a 429 past the client's limit of wrong keys). Not required: a public view that shows more
    to the admin (see `_admin_in_view`)."""
    admin_key = request.app.state.settings.admin_key
    token = bearer_token(request)
    if not admin_key:
        if required:
            raise ApiError(503, "The admin API is off: set ARENA_GATEWAY_ADMIN_KEY.", code="admin_disabled")
        return False
    guard: ApiKeyGuard = request.app.state.key_guard
    failures = guard.failures
    if token is None:
        if required:
            raise ApiError(401, "The admin key is missing or wrong.", code="invalid_admin_key",
                           headers={"WWW-Authenticate": "Bearer"})
        return False
    if not required:
        return await _admin_in_view(request, guard, admin_key, token)
    await failures.check_allowed(request)  # past the limit: 429 before the key is compared
    if _same(admin_key, token):
        return True
    raise await failures.failed(request, ApiError(
        401, "The admin key is missing or wrong.", code="invalid_admin_key", headers={"WWW-Authenticate": "Bearer"}))


async def _admin_in_view(request: Request, guard: ApiKeyGuard, admin_key: str, token: str) -> bool:
    """A public view's check: a missing key is False; a runner's registration token or one of the
    caller's valid API keys is no guess (False, never counted nor refused, whatever the client's
    count); any other wrong key is counted like on the admin routes (False, or 429 past the
    limit). With the store down the view is the public one (False), never a 503."""
    registration = request.app.state.settings.registration_token
    if registration and _same(registration, token):
        return False
    failures = guard.failures
    try:
        if _same(admin_key, token):  # first: never an API key, so no miss reloads the key table
            refused = await failures.over_limit(request)  # a guesser must not learn it guessed right
            if refused is None:
                return True
        elif await guard.lookup(token) is not None:
            return False
        else:
            refused = await failures.over_limit(request) or await failures.count(request)
    except DatabaseUnavailable:
        return False
    if refused is not None:
        raise refused
    return False


async def require_admin(request: Request) -> None:
    """FastAPI dependency of every admin route."""
    await verify_admin(request, required=True)


async def admin_view(request: Request) -> bool:
    """For public views that show more to the admin (instance URLs): see `verify_admin`."""
    return await verify_admin(request, required=False)


async def require_registration_token(request: Request) -> None:
    token = request.app.state.settings.registration_token
    if not token:
        raise ApiError(503, "Registration is off: the gateway has no ARENA_REGISTRATION_TOKEN.",
                       code="registration_disabled")
    if not _same(token, bearer_token(request)):
        raise ApiError(401, "The registration token is missing or wrong.", code="invalid_registration_token",
                       headers={"WWW-Authenticate": "Bearer"})

