"""A small client of GitHub's REST API for the fleet: dispatch a workflow, list and cancel runs.

Transient failures (5xx, 429, a 403 that is a rate limit) are retried with tenacity, honouring
`Retry-After`; a bad or under-privileged token fails at once with an error that says which
token and which permission. Lists follow the `Link: <...>; rel="next"` header.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from scripts.fleet_labels import RunLabels, parse_title

API_URL = "https://api.github.com"
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


class GitHubError(RuntimeError):
    """GitHub refused a request, or kept failing."""


class GitHubAuthError(GitHubError):
    """The token is bad (401) or lacks a permission (403)."""


class GitHubTransientError(GitHubError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class DispatchResult:
    run_id: int | None      # known when GitHub returns run details (it may answer 204 instead)
    html_url: str | None


@dataclass(frozen=True)
class WorkflowRun:
    id: int
    title: str
    status: str             # queued, in_progress, completed, ...
    conclusion: str | None
    html_url: str
    created_at: str
    labels: RunLabels | None

    @property
    def active(self) -> bool:
        return self.status != "completed"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> "WorkflowRun":
        title = data.get("display_title") or data.get("name") or ""
        return cls(id=int(data["id"]), title=title, status=data.get("status") or "",
                   conclusion=data.get("conclusion"), html_url=data.get("html_url") or "",
                   created_at=data.get("created_at") or "", labels=parse_title(title))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value and value.strip().isdigit():
        return float(value)
    reset = response.headers.get("x-ratelimit-reset")
    if response.headers.get("x-ratelimit-remaining") == "0" and reset and reset.isdigit():
        return max(0.0, float(reset) - time.time())
    return None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text[:200])
    except ValueError:
        return response.text[:200]


class GitHubClient:
    def __init__(self, repository: str, token: str, *, token_name: str = "GITHUB_TOKEN",
                 api_url: str = API_URL, transport: httpx.BaseTransport | None = None,
                 attempts: int = 5, backoff: float = 1.0, max_wait: float = 60.0,
                 timeout: float = 30.0) -> None:
        if repository.count("/") != 1:
            raise GitHubError(f"repository {repository!r} is not of the form owner/name")
        if not token:
            raise GitHubAuthError(f"no GitHub token: set {token_name}")
        self.repository = repository
        self.token_name = token_name
        self._attempts = attempts
        self._backoff = backoff
        self._max_wait = max_wait
        self._http = httpx.Client(
            base_url=api_url, transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "serverless-llm-arena-fleet"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport with retries -------------------------------------------------------------

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        computed = self._backoff * (2 ** (state.attempt_number - 1))
        return min(self._max_wait, hinted if hinted is not None else computed)

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        retrying = Retrying(retry=retry_if_exception_type(GitHubTransientError),
                            stop=stop_after_attempt(self._attempts), wait=self._wait, reraise=True)
        for attempt in retrying:
            with attempt:
                return self._request_once(method, url, **kwargs)
        raise AssertionError("unreachable")

    def _request_once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise GitHubTransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 400:
            return response
        what = f"GitHub {method} {url} -> {status}: {_message(response)}"
        if status == 429 or status >= 500:
            raise GitHubTransientError(what, _retry_after(response))
        if status == 403 and (response.headers.get("x-ratelimit-remaining") == "0"
                              or "retry-after" in response.headers):
            raise GitHubTransientError(what + " (rate limited)", _retry_after(response))
        if status == 401:
            raise GitHubAuthError(f"{what}. The token in {self.token_name} is invalid or expired.")
        if status == 403:
            raise GitHubAuthError(
                f"{what}. The token in {self.token_name} may not run workflows on {self.repository}: "
                "a personal access token needs the 'actions: write' (fine-grained) or 'workflow' "
                "(classic) permission; a GITHUB_TOKEN needs 'permissions: actions: write'.")
        if status == 404:
            raise GitHubError(f"{what}. The workflow or repository does not exist, or the token "
                              f"in {self.token_name} cannot see {self.repository}.")
        raise GitHubError(what)

    # -- API --------------------------------------------------------------------------------

    def dispatch_workflow(self, workflow: str, ref: str, inputs: dict[str, str]) -> DispatchResult:
        """`POST .../actions/workflows/{workflow}/dispatches`; run details when GitHub gives them."""
        response = self._request(
            "POST", f"/repos/{self.repository}/actions/workflows/{workflow}/dispatches",
            json={"ref": ref, "inputs": inputs, "return_run_details": True})
        if response.status_code == 200 and response.content:
            body = response.json()
            run_id = body.get("workflow_run_id")
            return DispatchResult(int(run_id) if run_id else None, body.get("html_url"))
        return DispatchResult(None, None)

    def iter_runs(self, workflow: str, *, event: str | None = None, status: str | None = None,
                  per_page: int = 100, max_pages: int = 10) -> Iterator[WorkflowRun]:
        """Runs of one workflow, newest first, across pages (at most `max_pages`)."""
        params: dict[str, Any] | None = {"per_page": per_page}
        if event:
            params["event"] = event  # type: ignore[index]
        if status:
            params["status"] = status  # type: ignore[index]
        url: str | None = f"/repos/{self.repository}/actions/workflows/{workflow}/runs"
        for _ in range(max_pages):
            if url is None:
                return
            response = self._request("GET", url, params=params)
            for data in response.json().get("workflow_runs", []):
                yield WorkflowRun.from_api(data)
            match = _NEXT_LINK.search(response.headers.get("link", ""))
            url, params = (match.group(1), None) if match else (None, None)

    def find_runs(self, workflow: str, *, model: str, instance: str | None = None,
                  active_only: bool = True) -> list[WorkflowRun]:
        """Runs whose labels are exactly this model (and instance label, when given)."""
        found = []
        for run in self.iter_runs(workflow):
            if run.labels is None or not run.labels.covers(model, instance):
                continue
            if active_only and not run.active:
                continue
            found.append(run)
        return found

    def get_run(self, run_id: int) -> WorkflowRun:
        return WorkflowRun.from_api(self._request("GET", f"/repos/{self.repository}/actions/runs/{run_id}").json())

    def step_succeeded(self, run_id: int, step_name: str) -> bool:
        """True once a step of that exact name has completed successfully in any job of the run."""
        url: str | None = f"/repos/{self.repository}/actions/runs/{run_id}/jobs"
        params: dict[str, Any] | None = {"per_page": 100, "filter": "latest"}
        for _ in range(5):
            if url is None:
                break
            response = self._request("GET", url, params=params)
            for job in response.json().get("jobs", []):
                for step in job.get("steps") or []:
                    if step.get("name") == step_name and step.get("status") == "completed" \
                            and step.get("conclusion") == "success":
                        return True
            match = _NEXT_LINK.search(response.headers.get("link", ""))
            url, params = (match.group(1), None) if match else (None, None)
        return False

    def cancel_run(self, run_id: int) -> None:
        self._request("POST", f"/repos/{self.repository}/actions/runs/{run_id}/cancel")
