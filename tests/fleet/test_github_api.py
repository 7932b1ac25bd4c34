"""The GitHub client against respx fakes of the real REST endpoints and response shapes."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from scripts.fleet_labels import RunLabels, parse_title
from scripts.github_api import GitHubAuthError, GitHubClient, GitHubError, GitHubTransientError
from scripts.successor import GitHubDispatcher, SuccessorRequest

API = "https://api.github.com"
REPO = "octo/arena"
TOKEN = "ghp_example0000000000000000000000000000"


def client(**kwargs) -> GitHubClient:
    return GitHubClient(REPO, TOKEN, token_name="WORKFLOW_PAT", backoff=0, **kwargs)


def run_json(run_id: int, title: str, status: str = "in_progress", conclusion=None) -> dict:
    return {"id": run_id, "name": "fleet", "display_title": title, "status": status,
            "conclusion": conclusion, "event": "workflow_dispatch", "run_attempt": 1,
            "html_url": f"https://github.com/{REPO}/actions/runs/{run_id}",
            "created_at": "2026-11-22T02:00:00Z", "updated_at": "2026-11-22T02:00:05Z"}


@respx.mock
def test_dispatch_sends_ref_and_string_inputs_and_reads_run_details():
    route = respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
        return_value=httpx.Response(200, json={
            "workflow_run_id": 4242, "run_url": f"{API}/repos/{REPO}/actions/runs/4242",
            "html_url": f"https://github.com/{REPO}/actions/runs/4242"}))
    with client() as gh:
        result = gh.dispatch_workflow("fleet.yml", "main", {"model": "smollm2-135m", "instance": "2"})
    assert result.run_id == 4242
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-github-api-version"] == "2022-11-28"
    body = json.loads(request.content)
    assert body["ref"] == "main"
    assert body["inputs"] == {"model": "smollm2-135m", "instance": "2"}


@respx.mock
def test_dispatch_204_without_details():
    respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
        return_value=httpx.Response(204))
    with client() as gh:
        assert gh.dispatch_workflow("fleet.yml", "main", {}).run_id is None


@respx.mock
def test_retries_5xx_and_429_then_succeeds():
    route = respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(side_effect=[
        httpx.Response(502, text="<html>Bad gateway</html>"),
        httpx.Response(429, headers={"retry-after": "0"}, json={"message": "slow down"}),
        httpx.Response(403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"},
                       json={"message": "API rate limit exceeded"}),
        httpx.Response(204),
    ])
    with client() as gh:
        gh.dispatch_workflow("fleet.yml", "main", {})
    assert route.call_count == 4


@respx.mock
def test_gives_up_after_the_attempts():
    route = respx.get(f"{API}/repos/{REPO}/actions/runs/1").mock(return_value=httpx.Response(503))
    with client(attempts=3) as gh, pytest.raises(GitHubTransientError):
        gh.get_run(1)
    assert route.call_count == 3


@respx.mock
def test_bad_token_fails_at_once_naming_the_variable():
    route = respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
        return_value=httpx.Response(401, json={"message": "Bad credentials",
                                               "documentation_url": "https://docs.github.com/rest"}))
    with client() as gh, pytest.raises(GitHubAuthError) as err:
        gh.dispatch_workflow("fleet.yml", "main", {})
    assert route.call_count == 1
    assert "WORKFLOW_PAT" in str(err.value) and TOKEN not in str(err.value)


@respx.mock
def test_forbidden_explains_the_permission():
    respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
        return_value=httpx.Response(403, json={"message": "Resource not accessible by integration"}))
    with client() as gh, pytest.raises(GitHubAuthError, match="actions: write"):
        gh.dispatch_workflow("fleet.yml", "main", {})


@respx.mock
def test_missing_workflow_is_a_plain_error():
    respx.post(f"{API}/repos/{REPO}/actions/workflows/nope.yml/dispatches").mock(
        return_value=httpx.Response(404, json={"message": "Not Found"}))
    with client() as gh, pytest.raises(GitHubError, match="does not exist"):
        gh.dispatch_workflow("nope.yml", "main", {})


@respx.mock
def test_run_list_follows_link_pagination_and_matches_labels_exactly():
    base = f"{API}/repos/{REPO}/actions/workflows/fleet.yml/runs"
    page2 = f"{base}?per_page=100&page=2"
    wanted = RunLabels("smollm2-135m", "1", "smollm2-135m.1.aaaa").title()
    respx.get(base, params={"page": "2"}).mock(return_value=httpx.Response(200, json={
        "total_count": 4, "workflow_runs": [run_json(3, wanted), run_json(4, wanted, "completed", "success")]}))
    respx.get(base).mock(return_value=httpx.Response(200, headers={
        "link": f'<{page2}>; rel="next", <{page2}>; rel="last"'}, json={
        "total_count": 4, "workflow_runs": [
            run_json(1, RunLabels("smollm2-135m-q8", "1", "x").title()),     # a longer name
            run_json(2, RunLabels("smollm2-135m", "10", "y").title()),       # instance 10, not 1
            run_json(5, "smollm2-135m instance 1 by hand"),                   # not one of ours
        ]}))
    with client() as gh:
        runs = gh.find_runs("fleet.yml", model="smollm2-135m", instance="1")
        every = gh.find_runs("fleet.yml", model="smollm2-135m", instance="1", active_only=False)
    assert [r.id for r in runs] == [3]
    assert [r.id for r in every] == [3, 4]


def test_titles_round_trip_and_reject_strangers():
    labels = RunLabels("gemma3-270m", "2", "gemma3-270m.2.beef")
    assert parse_title(labels.title()) == labels
    assert parse_title("arena-fleetish model=x instance=1") is None
    assert parse_title("fleet") is None
    assert RunLabels("m", "all").covers("m", "3")
    assert not RunLabels("m-x", "all").covers("m", "3")


@respx.mock
def test_dispatcher_finds_its_run_by_exact_labels_when_github_answers_204():
    respx.post(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
        return_value=httpx.Response(204))
    request = SuccessorRequest("smollm2-135m", "1", "smollm2-135m.1.new0", "smollm2-135m.1.old0", 5.5)
    respx.get(f"{API}/repos/{REPO}/actions/workflows/fleet.yml/runs").mock(return_value=httpx.Response(
        200, json={"total_count": 2, "workflow_runs": [
            run_json(7, RunLabels("smollm2-135m", "1", "smollm2-135m.1.old0").title()),
            run_json(8, RunLabels("smollm2-135m", "1", "smollm2-135m.1.new0").title(), "queued")]}))
    with client() as gh:
        launched = GitHubDispatcher(gh, "fleet.yml", "main").launch(request)
    assert launched.run_id == 8
    sent = json.loads(respx.calls[0].request.content)["inputs"]
    assert sent == {"model": "smollm2-135m", "instances": "1", "instance": "1",
                    "instance_id": "smollm2-135m.1.new0", "predecessor_id": "smollm2-135m.1.old0",
                    "duration_hours": "5.5", "auto_restart": "true"}
    assert all(isinstance(v, str) for v in sent.values())


@respx.mock
def test_dispatcher_reports_a_successor_run_that_ended():
    respx.get(f"{API}/repos/{REPO}/actions/runs/9").mock(return_value=httpx.Response(
        200, json=run_json(9, "arena-fleet model=m instance=1 id=z", "completed", "failure")))
    with client() as gh:
        from scripts.successor import LaunchedSuccessor
        why = GitHubDispatcher(gh, "fleet.yml", "main").failed(LaunchedSuccessor("run 9", run_id=9))
    assert why and "failure" in why
