"""The runner agent's side of the gateway's registration API.

`POST /api/instances` registers (or renews) one instance, `POST /api/instances/{id}/heartbeat`
keeps it, `GET /api/instances/{id}` tells whether the gateway sees it ready, and
`DELETE /api/instances/{id}` removes that one id and nothing else. Registering returns a
per-registration secret, which the client sends (`X-Arena-Registration-Secret`) with every later
call about that instance.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from scripts.retrying import RetryPolicy, TransientError

REGISTRATION_SECRET_HEADER = "X-Arena-Registration-Secret"


class RegistrationError(RuntimeError):
    """The gateway refused a registration for a reason a retry will not fix."""


class GatewayUnavailable(TransientError):
    """The gateway did not answer, or answered 5xx."""


def _error_message(response: httpx.Response) -> str:
    """The gateway's OpenAI-shaped `{"error": {"message", ...}}`, or the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class GatewayRegistrationClient:
    def __init__(self, gateway_url: str, token: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0, attempts: int = 3, backoff: float = 0.5) -> None:
        if not gateway_url:
            raise RegistrationError("no gateway URL: set ARENA_GATEWAY_URL")
        if not token:
            raise RegistrationError("no registration token: set ARENA_REGISTRATION_TOKEN")
        self.gateway_url = gateway_url.rstrip("/")
        # Short waits: this runs in the serving loop, between heartbeats.
        self.retry = RetryPolicy(attempts=attempts, backoff=backoff, max_wait=5.0)
        self._http = httpx.Client(base_url=self.gateway_url, transport=transport, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})
        self._secrets: dict[str, str] = {}  # instance id -> its registration secret

    def _secret_header(self, instance_id: str) -> dict[str, str]:
        secret = self._secrets.get(instance_id)
        return {REGISTRATION_SECRET_HEADER: secret} if secret else {}

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, *, public: bool = False, **kwargs: Any) -> httpx.Response:
        return self.retry.call(lambda: self._request_once(method, path, public=public, **kwargs))

    def _request_once(self, method: str, path: str, *, public: bool, **kwargs: Any) -> httpx.Response:
        request = self._http.build_request(method, path, **kwargs)
        if public:  # a public view: the registration token is not sent where it is not needed
            del request.headers["Authorization"]
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"{method} {self.gateway_url}{path}: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"{method} {self.gateway_url}{path} -> {response.status_code}")
        if response.status_code in (401, 403):
            raise RegistrationError(f"the gateway rejected ARENA_REGISTRATION_TOKEN ({response.status_code}): "
                                    f"{_error_message(response)}")
        return response

    @staticmethod
    def _path(instance_id: str, suffix: str = "") -> str:
        return f"/api/instances/{quote(instance_id, safe='')}{suffix}"

    def register(self, *, model: str, url: str, instance_id: str, ttl_seconds: int) -> dict[str, Any]:
        response = self._request("POST", "/api/instances", headers=self._secret_header(instance_id), json={
            "model": model, "url": url, "instance_id": instance_id, "ttl_seconds": ttl_seconds})
        if response.status_code == 404:
            raise RegistrationError(f"the gateway does not know the model {model!r}")
        if response.status_code >= 400:
            raise RegistrationError(f"registration refused ({response.status_code}): {_error_message(response)}")
        answer = response.json()
        if answer.get("registration_secret"):
            self._secrets[instance_id] = answer["registration_secret"]
        return answer

    def heartbeat(self, instance_id: str) -> bool:
        """True when renewed; False when the gateway forgot the instance (register again)."""
        return self.heartbeat_answer(instance_id) is not None

    def heartbeat_answer(self, instance_id: str) -> dict[str, Any] | None:
        """The gateway's view of the renewed instance (``"drain": true`` when it was asked to
        stop), or None when the gateway forgot it (register again)."""
        response = self._request("POST", self._path(instance_id, "/heartbeat"), headers=self._secret_header(instance_id))
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise RegistrationError(f"heartbeat refused ({response.status_code}): {_error_message(response)}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        return answer if isinstance(answer, dict) else {}

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        # The instance's state is public (polled every second during a handoff): no token.
        response = self._request("GET", self._path(instance_id), public=True)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise RegistrationError(f"instance lookup refused ({response.status_code})")
        return response.json()

    def is_ready(self, instance_id: str) -> bool:
        found = self.instance(instance_id)
        return bool(found) and found.get("state") == "ready"

    def deregister(self, instance_id: str) -> bool:
        """Remove this one instance id; False when the gateway had already forgotten it."""
        response = self._request("DELETE", self._path(instance_id), headers=self._secret_header(instance_id))
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise RegistrationError(f"deregistration refused ({response.status_code})")
        return True
