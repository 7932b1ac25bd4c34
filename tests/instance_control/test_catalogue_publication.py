"""The runtime catalogue overlay reaching the fleet on GitHub Actions, through an in-process
gateway whose fleet is Actions: its real GitHub client talks over HTTP to the local fake of
GitHub's API (`tests.fleet.fake_github.serving`), which answers the contents endpoints as
github.com does (sha mismatch 409, missing sha 422, missing branch 404, ...)."""

from __future__ import annotations

import base64

import pytest
import yaml

from scripts.github_api import GitHubClient
from shared.catalogue import MAX_OVERLAY_BYTES, OVERLAY_ENV, load_catalogue
from tests.fleet.fake_github import FakeGitHub, serving
from tests.harness import assert_openai_error

SMOL = "smollm2-135m"
ADMIN = "publication-admin-key-0123456789"
TOKEN = "ghp_fleetcontroltoken0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
PATH = "config/catalogue.overlay.yaml"
REPO = "arena/fleet"
REG_TOKEN = "publication-registration-token-0123"


@pytest.fixture
def fleet(gateway_apps, monkeypatch):
    """(gateway, fake GitHub): the gateway's fleet is Actions on the fake's repository."""
    fake = FakeGitHub(REPO, TOKEN)
    with serving(fake) as api_url:
        monkeypatch.setenv("ARENA_FLEETCTL_GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv("ARENA_FLEETCTL_GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("ARENA_FLEETCTL_GITHUB_API_URL", api_url)
        yield gateway_apps(admin_key=ADMIN, registration_token=REG_TOKEN), fake


def published(fake: FakeGitHub, branch: str = "main") -> dict:
    return yaml.safe_load(fake.file(PATH, branch))


def test_a_settings_change_is_committed_where_the_runners_read_it_and_starts_dispatch_after_it(fleet, tmp_path):
    gateway, fake = fleet
    view = gateway.get("/api/admin/instances", headers=AUTH).json()
    assert view["fleet"]["kind"] == "actions" and view["fleet"]["catalogue_overlay_path"] == PATH

    changed = gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"n_ctx": 4096, "sampling": {"top_k": 20}},
                            headers=AUTH)
    assert changed.status_code == 200, changed.text
    assert changed.json()["restart"] == "rolling"   # no longer "needed": the fleet applies it
    assert published(fake) == {"models": {SMOL: {"n_ctx": 4096, "sampling": {"top_k": 20}}}}
    first = fake.commits[-1]
    assert first["branch"] == "main" and "settings of smollm2-135m changed" in first["message"]

    # What a runner of that checkout loads: the catalogue with the overlay merged.
    (tmp_path / "overlay.yaml").write_bytes(fake.file(PATH))
    runner_view = load_catalogue(environ={OVERLAY_ENV: str(tmp_path / "overlay.yaml")})
    assert runner_view.models[SMOL].n_ctx == 4096 and runner_view.models[SMOL].sampling.top_k == 20

    # Published again unchanged: no commit. A start publishes (here: nothing new), then dispatches.
    again = gateway.post("/api/admin/instances/catalogue/publish", headers=AUTH)
    assert again.status_code == 200, again.text
    assert again.json()["changed"] is False and len(fake.commits) == 1
    gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"parallel": 2}, headers=AUTH)
    assert len(fake.commits) == 2
    started = gateway.post("/api/admin/instances", json={"model": SMOL}, headers=AUTH)
    assert started.status_code == 202, started.text
    contents = [i for i, r in enumerate(fake.requests) if r.endswith(f"/contents/{PATH}")]
    dispatch = fake.requests.index(f"POST /repos/{REPO}/actions/workflows/fleet.yml/dispatches")
    assert contents and max(contents) < dispatch   # the run starts from a commit that has the settings

    audit = gateway.get("/api/admin/audit", headers=AUTH).json()["data"]
    actions = [e["action"] for e in audit]
    assert actions.count("catalogue.publish") == 3 and "instance.start" in actions
    assert TOKEN not in str(audit) and TOKEN not in str(view) and TOKEN not in again.text


def test_a_runtime_model_is_published_whole_and_its_runs_are_accepted(fleet):
    gateway, fake = fleet
    overlay = gateway.app.state.catalogue_overlay
    spec = overlay.new_model_spec({"key": "smol-copy", "display_name": "Smol copy",
                                   "source": str(overlay.base.models[SMOL].source)})
    gateway.portal.call(lambda: overlay.add_model(spec))
    started = gateway.post("/api/admin/instances", json={"model": "smol-copy"}, headers=AUTH)
    assert started.status_code == 202, started.text
    assert published(fake)["models"]["smol-copy"]["display_name"] == "Smol copy"
    # The dispatcher takes any catalogue key (a runtime one too): its plan job checks it.
    assert fake.dispatches[-1]["inputs"]["model"] == "smol-copy"


def test_a_settings_change_rolls_the_runners_onto_runs_that_read_it(fleet, fake_upstreams):
    """The rolling restart on Actions: the change is committed, then a replacement run is
    dispatched (from a commit that has it); once its runner registers and is ready, the old
    instance's run is cancelled; it is gone when its runner deregisters."""
    from tests.harness import wait_until

    gateway, fake = fleet
    old_url, new_url = fake_upstreams().url, fake_upstreams().url
    old_run = fake.add_run("fleet.yml", f"arena-fleet model={SMOL} instance=1 id=old-id")
    registration = {"Authorization": f"Bearer {REG_TOKEN}"}
    old = gateway.post("/api/instances", headers=registration,
                       json={"model": SMOL, "instance_id": "old-id", "url": old_url}).json()

    def state(instance_id: str) -> str | None:
        answer = gateway.get(f"/api/instances/{instance_id}")
        return answer.json()["state"] if answer.status_code == 200 else None

    wait_until(lambda: state("old-id") == "ready", 30, what="the old instance ready")

    changed = gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"max_tokens_limit": 512}, headers=AUTH)
    assert changed.json()["restart"] == "rolling"
    # The audit log (newest first) has the settings change before the restart it caused.
    audited = [e["action"] for e in gateway.get("/api/admin/audit", headers=AUTH).json()["data"]][::-1]
    assert audited.index("model.settings") < audited.index("instance.rolling_restart"), audited
    wait_until(lambda: fake.dispatches, 30, what="the replacement dispatched")
    commit = fake.requests.index(f"PUT /repos/{REPO}/contents/{PATH}")
    assert commit < fake.requests.index(f"POST /repos/{REPO}/actions/workflows/fleet.yml/dispatches")
    assert published(fake) == {"models": {SMOL: {"max_tokens_limit": 512}}}
    new_id = fake.dispatches[-1]["inputs"]["instance_id"]
    assert fake.dispatches[-1]["inputs"]["instance"] == "2"   # label 1 is the old run's
    assert old_run.status == "in_progress"                   # nothing drains before the new one is ready

    gateway.post("/api/instances", headers=registration, json={"model": SMOL, "instance_id": new_id, "url": new_url})
    wait_until(lambda: old_run.status == "completed", 30, what="the old run cancelled")
    assert old_run.conclusion == "cancelled" and state(new_id) == "ready" and state("old-id") == "draining"
    gateway.delete("/api/instances/old-id", headers={**registration,
                                                     "X-Arena-Registration-Secret": old["registration_secret"]})
    wait_until(lambda: gateway.get("/api/admin/instances", headers=AUTH).json()["data"][0]["rolling_restart"]
               ["state"] == "done", 30, what="the rolling restart done")


class RacingGitHub(FakeGitHub):
    """Someone else writes the overlay file between our read and our write, `races` times."""

    races = 1

    def _contents(self, request, path):
        if request.method == "PUT" and self.races:
            self.races -= 1
            self.files["main"][path] = f"models: {{}}\n# written by hand meanwhile, {self.races} more\n".encode()
        return super()._contents(request, path)


@pytest.mark.parametrize("exists", [True, False], ids=["sha-mismatch-409", "created-meanwhile-422"])
def test_a_file_written_meanwhile_is_read_again_then_replaced(gateway_apps, monkeypatch, exists):
    fake = RacingGitHub(REPO, TOKEN)
    if exists:
        fake.files["main"][PATH] = b"models: {}\n"
    with serving(fake) as api_url:
        for name, value in {"REPOSITORY": REPO, "TOKEN": TOKEN, "API_URL": api_url}.items():
            monkeypatch.setenv(f"ARENA_FLEETCTL_GITHUB_{name}", value)
        gateway = gateway_apps(admin_key=ADMIN)
        gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"battle_weight": 2}, headers=AUTH)  # no restart field
        answer = gateway.post("/api/admin/instances/catalogue/publish", headers=AUTH)
        assert answer.status_code == 200, answer.text
        assert answer.json()["changed"] is True
        puts = [r for r in fake.requests if r.startswith("PUT ")]
        assert len(puts) == 2   # refused once (409 or 422), then written over the new sha
        assert published(fake) == {"models": {SMOL: {"battle_weight": 2.0}}}

        fake.races = 5          # it keeps changing: a bounded number of tries, then a clear 409
        gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"battle_weight": 3}, headers=AUTH)
        error = assert_openai_error(gateway.post("/api/admin/instances/catalogue/publish", headers=AUTH), 409,
                                    "publish_conflict")
        assert "kept changing" in error["message"]


def test_github_refusing_the_publication_is_a_clear_error_without_the_token(fleet):
    gateway, fake = fleet
    publish = "/api/admin/instances/catalogue/publish"
    assert_openai_error(gateway.post(publish), 401, "invalid_admin_key")

    fake.protected_branches.add("main")
    error = assert_openai_error(gateway.post(publish, headers=AUTH), 502, "github_failed")
    assert "Repository rule violations" in error["message"] and "pull request" in error["message"]
    fake.protected_branches.clear()

    fake.contents_writable = False
    error = assert_openai_error(gateway.post(publish, headers=AUTH), 502, "github_failed")
    assert "Contents: Read and write" in error["message"]
    fake.contents_writable = True

    fake.token = "rotated"
    error = assert_openai_error(gateway.post(publish, headers=AUTH), 502, "github_failed")
    assert "invalid or expired" in error["message"] and TOKEN not in error["message"]
    fake.token = TOKEN

    fake.used = fake.limit   # the hourly budget is spent: GitHub says when it resets
    answer = gateway.post(publish, headers=AUTH)
    assert_openai_error(answer, 503, "github_rate_limited")
    assert 3000 < int(answer.headers["retry-after"]) <= 3600
    fake.used = 0

    # A changed setting stays saved when GitHub refuses: the answer says so, the audit log too.
    fake.contents_writable = False
    changed = gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"n_ctx": 1024}, headers=AUTH)
    assert changed.status_code == 200 and changed.json()["settings"]["n_ctx"] == 1024
    audit = gateway.get("/api/admin/audit", headers=AUTH).json()["data"]
    assert "catalogue.publish_failed" in [e["action"] for e in audit] and TOKEN not in str(audit)


def test_a_missing_branch_and_an_oversized_overlay_are_refused(gateway_apps, monkeypatch):
    fake = FakeGitHub(REPO, TOKEN)
    with serving(fake) as api_url:
        for name, value in {"REPOSITORY": REPO, "TOKEN": TOKEN, "API_URL": api_url, "REF": "release"}.items():
            monkeypatch.setenv(f"ARENA_FLEETCTL_GITHUB_{name}", value)
        gateway = gateway_apps(admin_key=ADMIN)
        publish = "/api/admin/instances/catalogue/publish"
        error = assert_openai_error(gateway.post(publish, headers=AUTH), 502, "github_failed")
        assert "no branch 'release'" in error["message"]

        fake.files["release"] = {}
        assert gateway.post(publish, headers=AUTH).status_code == 200
        assert fake.file(PATH, "release") is not None and fake.file(PATH) is None

        overlay = gateway.app.state.catalogue_overlay
        for n in range(3):
            spec = overlay.new_model_spec({"key": f"m{n}", "description": "x" * (MAX_OVERLAY_BYTES // 2),
                                           "source": "hub:o/r:Q8_0"})
            gateway.portal.call(lambda: overlay.add_model(spec))
        error = assert_openai_error(gateway.post(publish, headers=AUTH), 413, "overlay_too_large")
        assert str(MAX_OVERLAY_BYTES) in error["message"]


def test_without_actions_there_is_nothing_to_publish(gateway_apps):
    gateway = gateway_apps(admin_key=ADMIN)
    assert_openai_error(gateway.post("/api/admin/instances/catalogue/publish", headers=AUTH), 503,
                        "fleet_control_not_configured")


def test_the_client_reads_and_writes_files_as_github_answers(tmp_path):
    """The GitHub client's contents calls against the fake, request shapes included."""
    import httpx

    from scripts.github_api import GitHubError, GitHubFileConflict

    fake = FakeGitHub(REPO, TOKEN)
    client = GitHubClient(REPO, TOKEN, transport=httpx.MockTransport(fake.handle), attempts=1)
    assert client.get_file("a/b.yaml", "main") is None
    made = client.put_file("a/b.yaml", b"one\n", message="m", branch="main", sha=None)
    assert made.created and made.blob_sha == FakeGitHub.blob_sha(b"one\n")
    current = client.get_file("a/b.yaml", "main")
    assert current.content == b"one\n" and current.sha == made.blob_sha
    with pytest.raises(GitHubFileConflict):
        client.put_file("a/b.yaml", b"two\n", message="m", branch="main", sha=None)        # 422
    with pytest.raises(GitHubFileConflict):
        client.put_file("a/b.yaml", b"two\n", message="m", branch="main", sha="0" * 40)    # 409
    updated = client.put_file("a/b.yaml", b"two\n", message="m", branch="main", sha=current.sha)
    assert not updated.created and fake.file("a/b.yaml") == b"two\n"
    with pytest.raises(GitHubError, match="does not exist"):
        client.put_file("a/b.yaml", b"x", message="m", branch="nope", sha=None)
    with pytest.raises(GitHubError, match="no branch 'nope'"):
        client.get_file("a/b.yaml", "nope")
    put = fake.commits[-1]
    assert put["message"] == "m" and base64.b64encode(put["content"]) == base64.b64encode(b"two\n")
    client.close()
