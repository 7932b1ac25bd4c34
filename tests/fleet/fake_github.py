"""A stateful fake of the GitHub REST endpoints the fleet uses, for respx.

Each behaviour follows GitHub's documentation (docs.github.com/en/rest):
- "Create a workflow dispatch event" (actions/workflows): 204 No Content; with
  `"return_run_details": true`, 200 with `workflow_run_id`, `run_url` and `html_url` (changelog
  2026-02-19, "Workflow dispatch API now returns run IDs"). Inputs the workflow file does not
  declare are refused with 422 "Unexpected inputs provided", a missing required one with 422.
- "List workflow runs for a workflow": newest first, `per_page`, `event`, `status` and
  `created` (">=DATE") filters, `Link: <...>; rel="next"` pagination. A dispatched run is listed
  only after a lag (`list_lag` list requests here): the run list is behind the dispatch.
- "Get a workflow run", "List jobs for a workflow run", "Cancel a workflow run" (202),
  "Get a repository" (`default_branch`).
- "Get a repository public key" and "Create or update a repository secret" (actions/secrets): the
  value must arrive sealed with that key (a libsodium sealed box, base64) with its `key_id`;
  201 when created, 204 when updated; a key id that is not the current one is refused (422).
- "Rate limits for the REST API": every answer carries `x-ratelimit-limit`, `-remaining`,
  `-used`, `-reset` (epoch seconds) and `-resource`; GITHUB_TOKEN has 1,000 requests an hour per
  repository. Over the primary limit: 403 with `x-ratelimit-remaining: 0` and "API rate limit
  exceeded". A secondary limit: 403 or 429 whose message says "secondary rate limit", with or
  without `retry-after`.
- "Get repository content" and "Create or update file contents" (repos/contents), as measured
  against github.com: GET of a file gives its blob `sha` and its bytes base64 in lines of 60
  (`encoding` "none" and no content past 1 MB); a missing file is 404 "Not Found", a missing
  ref 404 "No commit found for the ref <ref>". PUT needs `message` and base64 `content` (else
  422); a new file is 201 whatever `sha` says; an existing one needs the `sha` of its current
  blob: none is 422 "Invalid request.\n\n\"sha\" wasn't supplied.", another one 409 "<path> does
  not match <sha>"; the right one 200. A missing branch is 404 "Branch <b> not found", checked
  first; a branch under a rule that wants pull requests 409 "Repository rule violations found";
  a token without Contents write 403 "Resource not accessible by personal access token".
- "Create a workflow dispatch event" refuses a `choice` input's value that is not one of its
  options: 422 "Provided value '<v>' for input '<name>' not in the list of allowed values".
- 401 "Bad credentials" for any other token.

`serving(fake)` puts the fake on a real loopback HTTP port, for processes (a gateway) that talk
to it themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import respx
import yaml
from nacl.public import PrivateKey, SealedBox

from tests.loopback import LoopbackServer, QuietHandler

API = "https://api.github.com"
WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                     "If you reach out to GitHub Support for help, please include the request ID "
                     "0000:0000:0000000:0000000:00000000.")
DOCS = "https://docs.github.com/rest"


def declared_inputs(workflow: str) -> dict[str, dict]:
    data = yaml.safe_load((WORKFLOWS / workflow).read_text())
    on = data.get(True, data.get("on"))
    return on["workflow_dispatch"].get("inputs") or {}


def run_title(workflow: str, inputs: dict[str, str]) -> str:
    """The run-name expression of our workflows, evaluated the way Actions would."""
    if workflow == "gateway.yml":
        return f"arena-fleet model=gateway instance=1 id={inputs.get('instance_id') or '-'}"
    return (f"arena-fleet model={inputs.get('model')} instance={inputs.get('instance') or 'all'} "
            f"id={inputs.get('instance_id') or '-'}")


@dataclass
class FakeRun:
    id: int
    workflow: str
    title: str
    inputs: dict
    created_at: float
    status: str = "queued"
    conclusion: str | None = None
    steps: list[dict] = field(default_factory=list)
    listed_after: int = 0          # the run list shows this run from that list request on

    def json(self, repo: str) -> dict:
        return {"id": self.id, "name": self.workflow.removesuffix(".yml"), "display_title": self.title,
                "status": self.status, "conclusion": self.conclusion, "event": "workflow_dispatch",
                "run_attempt": 1, "path": f".github/workflows/{self.workflow}",
                "html_url": f"https://github.com/{repo}/actions/runs/{self.id}",
                "url": f"{API}/repos/{repo}/actions/runs/{self.id}",
                "created_at": datetime.fromtimestamp(self.created_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "updated_at": datetime.fromtimestamp(self.created_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


class FakeGitHub:
    def __init__(self, repo: str, token: str, *, limit: int = 1000, list_lag: int = 0,
                 run_details: bool = True) -> None:
        self.repo = repo
        self.token = token
        self.limit = limit
        self.used = 0
        self.reset_at = int(time.time()) + 3600
        self.list_lag = list_lag
        self.run_details = run_details      # False: a server that predates return_run_details
        self.runs: list[FakeRun] = []
        self.list_requests = 0
        self.requests: list[str] = []
        self.dispatches: list[dict] = []
        self.fail_next: list[httpx.Response | str] = []     # "secondary", "secondary-429", "created-502"
        self.secret_key = PrivateKey.generate()
        self.secrets: dict[str, str] = {}                   # name -> the decrypted value
        self.new_run_status = "queued"
        self.new_run_steps: list[dict] = []                 # the steps a dispatched run shows
        self._next_id = 1000
        self.default_branch = "main"
        self.files: dict[str, dict[str, bytes]] = {"main": {}}   # branch -> path -> content
        self.commits: list[dict] = []                       # every commit the contents API made
        self.protected_branches: set[str] = set()           # a rule wants pull requests there
        self.contents_writable = True                       # False: the token lacks Contents write
        self._lock = threading.Lock()

    # -- state helpers for tests ---------------------------------------------------------------

    def add_run(self, workflow: str, title: str, *, status: str = "in_progress", conclusion: str | None = None,
                age: float = 60.0) -> FakeRun:
        self._next_id += 1
        run = FakeRun(self._next_id, workflow, title, {}, time.time() - age, status, conclusion)
        self.runs.append(run)
        return run

    def _headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(max(0, self.limit - self.used)),
                "x-ratelimit-used": str(self.used), "x-ratelimit-reset": str(self.reset_at),
                "x-ratelimit-resource": "core", "x-github-api-version-selected": "2022-11-28"}

    def _json(self, status: int, body: object, **extra: str) -> httpx.Response:
        return httpx.Response(status, json=body, headers={**self._headers(), **extra})

    def _error(self, status: int, message: str, **extra: str) -> httpx.Response:
        return self._json(status, {"message": message, "documentation_url": DOCS, "status": str(status)}, **extra)

    # -- the handler ---------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, "Bad credentials")
        if self.used >= self.limit:
            return self._error(403, "API rate limit exceeded for installation ID 4242. If you reach out to GitHub "
                                    "Support for help, please include the request ID 0000.")
        self.used += 1
        scripted = self.fail_next.pop(0) if self.fail_next else None
        if isinstance(scripted, httpx.Response):
            return scripted
        if scripted == "secondary":
            return self._error(403, SECONDARY_MESSAGE)
        if scripted == "secondary-429":
            return self._error(429, SECONDARY_MESSAGE, **{"retry-after": "1"})
        path = request.url.path
        prefix = f"/repos/{self.repo}"
        if path == prefix:
            return self._json(200, {"full_name": self.repo, "default_branch": self.default_branch})
        if path.startswith(f"{prefix}/contents/"):
            return self._contents(request, path[len(f"{prefix}/contents/"):])
        if path == f"{prefix}/actions/secrets/public-key":
            return self._json(200, {"key_id": "3380204578043523366",
                                    "key": base64.b64encode(bytes(self.secret_key.public_key)).decode()})
        if m := re.fullmatch(rf"{prefix}/actions/secrets/(\w+)", path):
            body = json.loads(request.content or b"{}")
            if body.get("key_id") != "3380204578043523366":
                return self._error(422, "Invalid request.\n\nkey_id is not the repository's public key.")
            value = SealedBox(self.secret_key).decrypt(base64.b64decode(body["encrypted_value"])).decode()
            created = m.group(1) not in self.secrets
            self.secrets[m.group(1)] = value
            return self._json(201, {}) if created else httpx.Response(204, headers=self._headers())
        if m := re.fullmatch(rf"{prefix}/actions/workflows/([\w.-]+)/dispatches", path):
            response = self._dispatch(m.group(1), json.loads(request.content or b"{}"))
            if scripted == "created-502" and response.status_code < 300:
                return httpx.Response(502, text="<html><body><h1>502 Bad Gateway</h1></body></html>")
            return response
        if m := re.fullmatch(rf"{prefix}/actions/workflows/([\w.-]+)/runs", path):
            return self._list(request, m.group(1))
        if m := re.fullmatch(rf"{prefix}/actions/runs/(\d+)", path):
            run = self._run(int(m.group(1)))
            return self._json(200, run.json(self.repo)) if run else self._error(404, "Not Found")
        if m := re.fullmatch(rf"{prefix}/actions/runs/(\d+)/jobs", path):
            run = self._run(int(m.group(1)))
            if not run:
                return self._error(404, "Not Found")
            return self._json(200, {"total_count": 1, "jobs": [{"id": run.id * 10, "run_id": run.id, "name": "job",
                                                                 "status": run.status, "steps": run.steps}]})
        if m := re.fullmatch(rf"{prefix}/actions/runs/(\d+)/cancel", path):
            run = self._run(int(m.group(1)))
            if not run:
                return self._error(404, "Not Found")
            if run.status == "completed":
                return self._error(409, "Cannot cancel a workflow run that is completed.")
            run.status, run.conclusion = "completed", "cancelled"
            return self._json(202, {})
        return self._error(404, "Not Found")

    # -- repository contents -------------------------------------------------------------------

    @staticmethod
    def blob_sha(content: bytes) -> str:
        """Git's blob id, as GitHub gives a file's `sha`."""
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    def file(self, path: str, branch: str = "main") -> bytes | None:
        return self.files.get(branch, {}).get(path)

    def _file_json(self, path: str, branch: str, content: bytes) -> dict:
        sha = self.blob_sha(content)
        html = f"https://github.com/{self.repo}/blob/{branch}/{path}"
        return {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "size": len(content),
                "url": f"{API}/repos/{self.repo}/contents/{path}?ref={branch}", "html_url": html,
                "git_url": f"{API}/repos/{self.repo}/git/blobs/{sha}",
                "download_url": f"https://raw.githubusercontent.com/{self.repo}/{branch}/{path}",
                "_links": {"self": f"{API}/repos/{self.repo}/contents/{path}?ref={branch}", "html": html,
                           "git": f"{API}/repos/{self.repo}/git/blobs/{sha}"}}

    def _contents(self, request: httpx.Request, path: str) -> httpx.Response:
        if request.method == "GET":
            branch = request.url.params.get("ref") or self.default_branch
            if branch not in self.files:
                return self._error(404, f"No commit found for the ref {branch}")
            content = self.files[branch].get(path)
            if content is None:
                return self._error(404, "Not Found")
            body = self._file_json(path, branch, content)
            if len(content) > 1024 * 1024:
                body.update(content="", encoding="none")
            else:
                encoded = base64.b64encode(content).decode()
                body.update(content="\n".join(encoded[i:i + 60] for i in range(0, len(encoded), 60)) + "\n",
                            encoding="base64")
            return self._json(200, body)
        if request.method != "PUT":
            return self._error(404, "Not Found")
        if not self.contents_writable:
            return self._error(403, "Resource not accessible by personal access token")
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return self._error(400, "Problems parsing JSON")
        for name in ("message", "content"):
            if not isinstance(body.get(name), str):
                return self._error(422, f"Invalid request.\n\nFor 'properties/{name}', {json.dumps(body.get(name))} "
                                        "is not a string.")
        branch = body.get("branch") or self.default_branch
        if branch not in self.files:
            return self._error(404, f"Branch {branch} not found")
        try:
            content = base64.b64decode(body["content"], validate=True)
        except (binascii.Error, ValueError):
            return self._error(422, "content is not valid Base64")
        current = self.files[branch].get(path)
        if current is not None:
            if not body.get("sha"):
                return self._error(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if body["sha"] != self.blob_sha(current):
                return self._error(409, f"{path} does not match {body['sha']}")
        if branch in self.protected_branches:
            return self._error(409, "Repository rule violations found\n\nChanges must be made through a pull request.")
        self.files[branch][path] = content
        commit_sha = hashlib.sha1(f"{len(self.commits)}{path}{branch}".encode() + content).hexdigest()
        self.commits.append({"sha": commit_sha, "branch": branch, "path": path, "message": body["message"],
                             "content": content})
        return self._json(201 if current is None else 200, {
            "content": self._file_json(path, branch, content),
            "commit": {"sha": commit_sha, "message": body["message"],
                       "html_url": f"https://github.com/{self.repo}/commit/{commit_sha}",
                       "url": f"{API}/repos/{self.repo}/git/commits/{commit_sha}"}})

    def _run(self, run_id: int) -> FakeRun | None:
        return next((r for r in self.runs if r.id == run_id), None)

    def _dispatch(self, workflow: str, body: dict) -> httpx.Response:
        if not (WORKFLOWS / workflow).is_file():
            return self._error(404, "Not Found")
        if "ref" not in body:
            return self._error(422, "Invalid request.\n\n\"ref\" wasn't supplied.")
        if "return_run_details" in body and not self.run_details:
            return self._error(422, "Invalid request.\n\nNo subschema in \"anyOf\" matched.\n"
                                    "\"return_run_details\" is not a permitted key.")
        declared = declared_inputs(workflow)
        inputs = body.get("inputs") or {}
        unexpected = sorted(set(inputs) - set(declared))
        if unexpected:
            return self._error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        for name, spec in declared.items():
            if spec.get("required") and name not in inputs:
                return self._error(422, f"Required input '{name}' not provided")
            if spec.get("type") == "choice" and name in inputs and str(inputs[name]) not in spec["options"]:
                return self._error(422, f"Provided value '{inputs[name]}' for input '{name}' not in the list of "
                                        "allowed values")
        values = {name: str(spec.get("default", "")) for name, spec in declared.items()}
        values.update({k: str(v) for k, v in inputs.items()})
        self._next_id += 1
        run = FakeRun(self._next_id, workflow, run_title(workflow, values), values, time.time(),
                      status=self.new_run_status, steps=list(self.new_run_steps),
                      listed_after=self.list_requests + self.list_lag)
        self.runs.append(run)
        self.dispatches.append({"workflow": workflow, **body})
        if body.get("return_run_details"):
            return self._json(200, {"workflow_run_id": run.id, "run_url": f"{API}/repos/{self.repo}/actions/runs/{run.id}",
                                    "html_url": f"https://github.com/{self.repo}/actions/runs/{run.id}"})
        return httpx.Response(204, headers=self._headers())

    def _list(self, request: httpx.Request, workflow: str) -> httpx.Response:
        self.list_requests += 1
        params = request.url.params
        runs = [r for r in self.runs if r.workflow == workflow and r.listed_after < self.list_requests]
        if params.get("event"):
            runs = [r for r in runs if params["event"] == "workflow_dispatch"]
        if params.get("status"):
            runs = [r for r in runs if r.status == params["status"]]
        if created := params.get("created"):
            since = datetime.strptime(created.removeprefix(">="), "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=timezone.utc).timestamp()
            runs = [r for r in runs if r.created_at >= since]
        runs.sort(key=lambda r: r.created_at, reverse=True)
        per_page = min(int(params.get("per_page", 30)), 100)
        page = int(params.get("page", 1))
        chunk = runs[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(runs):
            nxt = request.url.copy_set_param("page", str(page + 1))
            headers["link"] = f'<{nxt}>; rel="next"'
        return self._json(200, {"total_count": len(runs), "workflow_runs": [r.json(self.repo) for r in chunk]},
                          **headers)


@contextmanager
def serving(fake: FakeGitHub) -> Iterator[str]:
    """The fake on a loopback HTTP port (one request at a time, like its state wants); yields its
    URL, the `api_url` a client in another process is given."""

    class Handler(QuietHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = httpx.Request(self.command, f"http://{self.headers.get('Host')}{self.path}",
                                    headers=dict(self.headers.items()), content=self.rfile.read(length))
            with fake._lock:
                response = fake.handle(request)
            self.reply(response.status_code, {name: value for name, value in response.headers.items()
                                              if name.lower() not in ("content-length", "transfer-encoding",
                                                                      "connection")}, response.read())

        do_GET = do_POST = do_PUT = do_DELETE = _any

    with LoopbackServer(Handler, "fake-github") as server:
        yield server.url


@contextmanager
def answering(fake: FakeGitHub) -> Iterator[FakeGitHub]:
    """Every request to api.github.com made in the block goes to `fake`."""
    with respx.mock(base_url=API, assert_all_called=False) as router:
        router.route().mock(side_effect=fake.handle)
        yield fake
