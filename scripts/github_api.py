"""A small client of GitHub's REST API for the fleet: dispatch a workflow, list and cancel runs.

Retries go through the fleet's one scaffold (`scripts/retrying.py`). What is transient follows
GitHub's "Rate limits for the REST API" (docs.github.com/en/rest/using-the-rest-api/
rate-limits-for-the-rest-api, "Exceeding the rate limit"): a 403 or 429 is a rate limit when
`x-ratelimit-remaining` is 0 (primary: wait until `x-ratelimit-reset`), when it carries
`retry-after` (wait that long), or when its message says so (secondary: wait at least a minute,
longer each time). A wait longer than the client's `max_wait` is not slept through: the error
goes to the caller with `retry_after`, so a runner's serving loop never blocks on GitHub. A bad
or under-privileged token fails at once with an error that says which token and which permission.
A dispatch is never sent twice by the client: a dispatch that may have created a run raises
`DispatchUncertain`, and `RunDispatch` looks the run up by its labels before dispatching again.
Lists follow the `Link: <...>; rel="next"` header.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote

import httpx

from scripts.fleet_labels import RunLabels, parse_title
from scripts.retrying import RetryPolicy, TransientError

API_URL = "https://api.github.com"
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
SECONDARY_LIMIT_WAIT = 60.0     # "wait for at least one minute before retrying"
ACTIONS_PERMISSION = "Actions: Read and write"
CONTENTS_PERMISSION = "Contents: Read and write"


class GitHubError(RuntimeError):
    """GitHub refused a request, or kept failing."""


class GitHubAuthError(GitHubError):
    """The token is bad (401) or lacks a permission (403)."""


class GitHubTransientError(TransientError, GitHubError):
    pass


class GitHubRateLimited(GitHubTransientError):
    """A primary or secondary rate limit: `retry_after` says how long to leave GitHub alone."""


class GitHubFileConflict(GitHubError):
    """The file changed since its sha was read: a 409 "<path> does not match <sha>", or a 422
    "\"sha\" wasn't supplied" for a file created meanwhile. Read it again, then write."""


class DispatchUncertain(GitHubTransientError):
    """The dispatch failed in a way that may still have created a run (a 5xx, a timeout)."""


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


@dataclass(frozen=True)
class RepositoryFile:
    """A file as "Get repository content" gives it: its blob sha and, up to 1 MB, its bytes."""

    path: str
    sha: str
    content: bytes | None   # None when GitHub did not inline it (over 1 MB: `encoding` "none")
    html_url: str


@dataclass(frozen=True)
class FileCommit:
    """What "Create or update file contents" made: the commit, and the file's new blob sha."""

    commit_sha: str
    html_url: str
    blob_sha: str
    created: bool           # 201: the file is new; 200: it replaced one


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text[:200])
    except (ValueError, AttributeError):
        return response.text[:200]


def rate_limit_wait(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds to wait when `response` is a rate limit (primary or secondary), else None."""
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return float(retry_after)
    reset = headers.get("x-ratelimit-reset", "").strip()
    if headers.get("x-ratelimit-remaining") == "0":
        if reset.isdigit():
            return max(1.0, float(reset) - (time.time() if now is None else now))
        return SECONDARY_LIMIT_WAIT
    if response.status_code == 429 or "rate limit" in _message(response).lower():
        return SECONDARY_LIMIT_WAIT
    return None


TOKEN_VARIABLES = ("WORKFLOW_PAT", "GITHUB_TOKEN")


def token_from_environment(environ: Mapping[str, str]) -> tuple[str, str]:
    """(variable name, token): `WORKFLOW_PAT` when set (its runs can start other runs), else
    `GITHUB_TOKEN`. The one place this choice is made."""
    for name in TOKEN_VARIABLES:
        if environ.get(name):
            return name, environ[name]
    return TOKEN_VARIABLES[-1], ""


class GitHubClient:
    def __init__(self, repository: str, token: str, *, token_name: str = "GITHUB_TOKEN",
                 api_url: str = API_URL, transport: httpx.BaseTransport | None = None,
                 attempts: int = 5, backoff: float = 1.0, max_wait: float = 30.0,
                 timeout: float = 30.0) -> None:
        if repository.count("/") != 1:
            raise GitHubError(f"repository {repository!r} is not of the form owner/name")
        if not token:
            raise GitHubAuthError(f"no GitHub token: set {token_name}")
        self.repository = repository
        self.token_name = token_name
        self.retry = RetryPolicy(attempts=attempts, backoff=backoff, max_wait=max_wait)
        self._http = httpx.Client(
            base_url=api_url, transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "serverless-llm-arena-fleet"},
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **kwargs: Any) -> "GitHubClient":
        """The client a job on Actions uses: its repository, API URL and token variables."""
        token_name, token = token_from_environment(environ)
        return cls(environ.get("GITHUB_REPOSITORY", ""), token, token_name=token_name,
                   api_url=environ.get("GITHUB_API_URL") or API_URL, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "GitHubClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport with retries -------------------------------------------------------------

    def _request(self, method: str, url: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        if not retry:
            return self._request_once(method, url, **kwargs)
        return self.retry.call(lambda: self._request_once(method, url, **kwargs))

    def _request_once(self, method: str, url: str, *, passthrough: tuple[int, ...] = (),
                      permission: str = ACTIONS_PERMISSION, **kwargs: Any) -> httpx.Response:
        """One request; a status in `passthrough` is the caller's to read, any other 4xx/5xx an
        error. `permission` names what a 403 lacks (a fine-grained token's permission)."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise GitHubTransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status < 400:
            return response
        what = f"GitHub {method} {url} -> {status}: {_message(response)}"
        wait = rate_limit_wait(response)
        if wait is not None:
            raise GitHubRateLimited(f"{what} (rate limited; retry in {wait:.0f}s)", wait)
        if status in passthrough:
            return response
        if status >= 500:
            raise GitHubTransientError(what)
        if status == 401:
            raise GitHubAuthError(f"{what}. The token in {self.token_name} is invalid or expired.")
        if status == 403:
            raise GitHubAuthError(
                f"{what}. The token in {self.token_name} lacks a permission on {self.repository}: "
                f"a fine-grained personal access token needs '{permission}' on this "
                "repository, a classic one the 'repo' scope; a GITHUB_TOKEN needs "
                f"'permissions: {permission.split(':')[0].lower()}: write' in the workflow.")
        if status == 404:
            raise GitHubError(f"{what}. The workflow or repository does not exist, or the token "
                              f"in {self.token_name} cannot see {self.repository}.")
        raise GitHubError(what)

    # -- API --------------------------------------------------------------------------------

    def dispatch_workflow(self, workflow: str, ref: str, inputs: dict[str, str]) -> DispatchResult:
        """`POST .../actions/workflows/{workflow}/dispatches` with `return_run_details` (GitHub
        answers 200 with `workflow_run_id`, `run_url`, `html_url`; without the parameter, or on a
        server that predates it, 204). Sent once: a failure that may have created a run raises
        `DispatchUncertain`, never a second POST."""
        url = f"/repos/{self.repository}/actions/workflows/{workflow}/dispatches"
        body: dict[str, Any] = {"ref": ref, "inputs": inputs, "return_run_details": True}
        try:
            response = self._request("POST", url, retry=False, json=body)
        except GitHubRateLimited:
            raise                       # refused before any run was made
        except GitHubTransientError as exc:
            raise DispatchUncertain(f"{exc}; the run may exist: look it up before dispatching again") from exc
        except GitHubError as exc:
            # A server without run details refuses the parameter with 422: nothing was created.
            if "422" not in str(exc) or "return_run_details" not in str(exc):
                raise
            del body["return_run_details"]
            response = self._request("POST", url, retry=False, json=body)
        if response.status_code == 200 and response.content:
            details = response.json()
            run_id = details.get("workflow_run_id")
            return DispatchResult(int(run_id) if run_id else None, details.get("html_url"))
        return DispatchResult(None, None)

    def iter_runs(self, workflow: str, *, event: str | None = None, status: str | None = None,
                  created_since: float | None = None, per_page: int = 100,
                  max_pages: int = 10) -> Iterator[WorkflowRun]:
        """Runs of one workflow, newest first, across pages (at most `max_pages`)."""
        params: dict[str, Any] | None = {"per_page": per_page}
        assert params is not None
        if event:
            params["event"] = event
        if status:
            params["status"] = status
        if created_since is not None:
            since = datetime.fromtimestamp(created_since, timezone.utc) - timedelta(minutes=2)  # clock skew
            params["created"] = ">=" + since.strftime("%Y-%m-%dT%H:%M:%SZ")
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
                  active_only: bool = True, **filters: Any) -> list[WorkflowRun]:
        """Runs whose labels are exactly this model (and instance label, when given)."""
        found = []
        for run in self.iter_runs(workflow, **filters):
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

    def set_secret(self, name: str, value: str) -> None:
        """Create or update a repository secret: the value is sealed with the repository's public
        key (libsodium sealed box), as "Create or update a repository secret" requires, so it
        never travels or rests in clear."""
        from nacl.public import PublicKey, SealedBox

        key = self._request("GET", f"/repos/{self.repository}/actions/secrets/public-key").json()
        sealed = SealedBox(PublicKey(base64.b64decode(key["key"]))).encrypt(value.encode())
        self._request("PUT", f"/repos/{self.repository}/actions/secrets/{name}",
                      json={"encrypted_value": base64.b64encode(sealed).decode(), "key_id": key["key_id"]})

    def _contents_url(self, path: str) -> str:
        return f"/repos/{self.repository}/contents/{quote(path.strip('/'), safe='/')}"

    def get_file(self, path: str, ref: str) -> RepositoryFile | None:
        """`GET .../contents/{path}?ref=`: the file on that branch, or None when it has no such
        file. A branch that does not exist is an error (404 "No commit found for the ref")."""
        response = self._request("GET", self._contents_url(path), params={"ref": ref}, passthrough=(404,),
                                 permission=CONTENTS_PERMISSION)
        if response.status_code == 404:
            message = _message(response)
            if "no commit found" in message.lower():
                raise GitHubError(f"GitHub: {self.repository} has no branch {ref!r} ({message}).")
            return None
        data = response.json()
        if not isinstance(data, dict) or data.get("type") != "file" or not isinstance(data.get("sha"), str):
            raise GitHubError(f"GitHub: {path} on {ref} in {self.repository} is not a file.")
        content = None
        if data.get("encoding") == "base64" and isinstance(data.get("content"), str):
            content = base64.b64decode(data["content"])
        return RepositoryFile(path=str(data.get("path") or path), sha=data["sha"], content=content,
                              html_url=str(data.get("html_url") or ""))

    def put_file(self, path: str, content: bytes, *, message: str, branch: str, sha: str | None) -> FileCommit:
        """`PUT .../contents/{path}`: one commit on `branch` that makes the file `content`. `sha`
        is the blob being replaced (None: the file is new). Sent once (a retried PUT after a lost
        answer would meet its own commit as a conflict): `GitHubFileConflict` when the file moved
        on, `GitHubError` for a refusal (a branch rule, a missing branch, a bad body)."""
        body: dict[str, Any] = {"message": message, "content": base64.b64encode(content).decode(), "branch": branch}
        if sha is not None:
            body["sha"] = sha
        url = self._contents_url(path)
        response = self._request("PUT", url, retry=False, json=body, passthrough=(404, 409, 422),
                                 permission=CONTENTS_PERMISSION)
        status = response.status_code
        if status in (200, 201):
            data = response.json()
            commit, file = data.get("commit") or {}, data.get("content") or {}
            return FileCommit(commit_sha=str(commit.get("sha") or ""), html_url=str(commit.get("html_url") or ""),
                              blob_sha=str(file.get("sha") or ""), created=status == 201)
        message_text = _message(response)
        what = f"GitHub PUT {url} -> {status}: {message_text}"
        if (status == 409 and "does not match" in message_text) or \
                (status == 422 and '"sha" wasn\'t supplied' in message_text):
            raise GitHubFileConflict(what)
        if status == 404:
            raise GitHubError(f"{what}. The branch {branch!r} or the repository does not exist, or the token in "
                              f"{self.token_name} cannot see {self.repository}.")
        raise GitHubError(f"{what}. GitHub refused the commit (a branch protection rule or ruleset may "
                          "require a pull request for this branch).")

    def default_branch(self) -> str:
        return str(self._request("GET", f"/repos/{self.repository}").json().get("default_branch") or "main")

    def cancel_run(self, run_id: int) -> None:
        self._request("POST", f"/repos/{self.repository}/actions/runs/{run_id}/cancel")


class RunDispatch:
    """One dispatch of a workflow for one set of run labels, and the run it started.

    `dispatch()` POSTs once. GitHub's answer names the run (`return_run_details`); when it does
    not (a 204, or a dispatch whose answer was lost), `check()` looks the run up by its exact
    labels, since the run list lags behind a dispatch, for `lookup_seconds` before calling the
    dispatch lost, and only then may the caller dispatch again (with fresh labels).
    """

    PENDING, RUNNING, ENDED, LOST = "pending", "running", "ended", "lost"

    def __init__(self, client: GitHubClient, workflow: str, ref: str, inputs: dict[str, str],
                 labels: RunLabels, *, lookup_seconds: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.workflow = workflow
        self.ref = ref
        self.inputs = inputs
        self.labels = labels
        self.lookup_seconds = lookup_seconds
        self.clock = clock
        self.run: WorkflowRun | None = None
        self.run_id: int | None = None
        self.html_url: str | None = None
        self.dispatched_at: float | None = None

    def dispatch(self) -> None:
        """POST the dispatch. Raises `GitHubAuthError`/`GitHubRateLimited`/`GitHubError` when
        GitHub surely made no run; after `DispatchUncertain` the run is looked up like a 204's."""
        self.dispatched_at = self.clock()
        try:
            result = self.client.dispatch_workflow(self.workflow, self.ref, self.inputs)
        except DispatchUncertain:
            return
        self.run_id, self.html_url = result.run_id, result.html_url

    def _look_up(self) -> None:
        assert self.dispatched_at is not None
        for run in self.client.find_runs(self.workflow, model=self.labels.model, instance=self.labels.instance,
                                         active_only=False, event="workflow_dispatch",
                                         created_since=self.dispatched_at, max_pages=1):
            if run.labels and run.labels.instance_id == self.labels.instance_id:
                self.run, self.run_id, self.html_url = run, run.id, run.html_url
                return

    def check(self) -> str:
        """One look at the run (one or two requests): `pending` (not listed yet), `running`,
        `ended` (completed: see `self.run.conclusion`) or `lost` (never listed in time)."""
        if self.run_id is None:
            self._look_up()
            if self.run_id is None:
                assert self.dispatched_at is not None
                return self.LOST if self.clock() - self.dispatched_at > self.lookup_seconds else self.PENDING
        else:
            self.run = self.client.get_run(self.run_id)
        assert self.run is not None
        return self.ENDED if self.run.status == "completed" else self.RUNNING

    def describe(self) -> str:
        return f"workflow run {self.html_url or '(not listed yet)'} '{self.labels.title()}'"
