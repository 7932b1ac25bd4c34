"""The GitHub client against a stateful respx fake of GitHub's REST API (tests/fleet/fake_github.py)."""

from __future__ import annotations


import httpx
import pytest
import respx

from scripts.fleet_labels import RunLabels, parse_title
from scripts.github_api import (DispatchUncertain, GitHubAuthError, GitHubClient, GitHubError, GitHubRateLimited,
                                GitHubTransientError, RunDispatch, token_from_environment)
from scripts.successor import GitHubDispatcher, SuccessorRequest
from tests.fleet.fake_github import API, FakeGitHub, answering

REPO = "octo/arena"
TOKEN = "ghp_example0000000000000000000000000000"


def client(**kwargs) -> GitHubClient:
    return GitHubClient(REPO, TOKEN, token_name="WORKFLOW_PAT", backoff=0, **kwargs)


@pytest.fixture
def github():
    with answering(FakeGitHub(REPO, TOKEN)) as fake:
        yield fake


def test_dispatch_sends_ref_and_string_inputs_and_reads_run_details(github):
    with client() as gh:
        result = gh.dispatch_workflow("fleet.yml", "main", {"model": "smollm2-135m", "instance": "2"})
    assert result.run_id == github.runs[-1].id
    sent = github.dispatches[-1]
    assert sent["ref"] == "main" and sent["return_run_details"] is True
    assert sent["inputs"] == {"model": "smollm2-135m", "instance": "2"}


def test_dispatch_without_run_details_and_refused_inputs(github):
    github.run_details = False          # a server that predates return_run_details refuses it (422)
    with client() as gh:
        assert gh.dispatch_workflow("fleet.yml", "main", {"model": "smollm2-135m"}).run_id is None
        assert len(github.runs) == 1    # the 422 made no run; the second POST made one
        with pytest.raises(GitHubError, match="Unexpected inputs"):
            gh.dispatch_workflow("fleet.yml", "main", {"model": "smollm2-135m", "colour": "red"})


def test_a_dispatch_is_never_posted_twice(github):
    """A 5xx after the run was made (or a timeout) must not make a second run."""
    github.fail_next = ["created-502"]
    with client() as gh, pytest.raises(DispatchUncertain, match="look it up"):
        gh.dispatch_workflow("fleet.yml", "main", {"model": "smollm2-135m"})
    assert github.requests.count(f"POST /repos/{REPO}/actions/workflows/fleet.yml/dispatches") == 1
    assert len(github.runs) == 1


def test_reads_are_retried_through_5xx_and_short_rate_limits(github):
    run = github.add_run("fleet.yml", RunLabels("m", "1", "x").title())
    github.fail_next = [httpx.Response(502, text="<html>Bad gateway</html>"), "secondary-429"]
    with client() as gh:
        assert gh.get_run(run.id).id == run.id
    assert github.requests.count(f"GET /repos/{REPO}/actions/runs/{run.id}") == 3


def test_a_secondary_rate_limit_is_transient_not_a_bad_token(github):
    """403 with a "secondary rate limit" message and no headers: wait at least a minute (before:
    taken for a token without permission, and the runner stopped trying for good)."""
    github.fail_next = ["secondary"]
    with client() as gh, pytest.raises(GitHubRateLimited) as err:
        gh.get_run(1)
    assert err.value.retry_after == 60
    assert not isinstance(err.value, GitHubAuthError)
    assert len(github.requests) == 1        # a minute is longer than the client waits: the caller decides


def test_the_primary_limit_waits_until_the_reset(github):
    github.used = github.limit
    with client() as gh, pytest.raises(GitHubRateLimited) as err:
        gh.get_run(1)
    assert 3500 < err.value.retry_after <= 3600
    assert len(github.requests) == 1


def test_gives_up_after_the_attempts():
    with respx.mock(base_url=API) as router:
        route = router.get(f"/repos/{REPO}/actions/runs/1").mock(return_value=httpx.Response(503))
        with client(attempts=3) as gh, pytest.raises(GitHubTransientError):
            gh.get_run(1)
    assert route.call_count == 3


def test_bad_token_fails_at_once_naming_the_variable(github):
    with GitHubClient(REPO, "ghp_wrong000000", token_name="WORKFLOW_PAT", backoff=0) as gh, \
            pytest.raises(GitHubAuthError) as err:
        gh.dispatch_workflow("fleet.yml", "main", {"model": "m"})
    assert len(github.requests) == 1
    assert "WORKFLOW_PAT" in str(err.value) and "invalid or expired" in str(err.value)


def test_forbidden_explains_the_permission_of_each_kind_of_token():
    with respx.mock(base_url=API) as router:
        router.post(f"/repos/{REPO}/actions/workflows/fleet.yml/dispatches").mock(
            return_value=httpx.Response(403, json={"message": "Resource not accessible by integration"}))
        with client() as gh, pytest.raises(GitHubAuthError) as err:
            gh.dispatch_workflow("fleet.yml", "main", {})
    text = str(err.value)
    assert "'repo' scope" in text and "Actions: Read and write" in text and "actions: write" in text


def test_missing_workflow_is_a_plain_error(github):
    with client() as gh, pytest.raises(GitHubError, match="does not exist"):
        gh.dispatch_workflow("nope.yml", "main", {})


def test_token_choice():
    assert token_from_environment({"WORKFLOW_PAT": "p", "GITHUB_TOKEN": "g"}) == ("WORKFLOW_PAT", "p")
    assert token_from_environment({"WORKFLOW_PAT": "", "GITHUB_TOKEN": "g"}) == ("GITHUB_TOKEN", "g")
    assert token_from_environment({}) == ("GITHUB_TOKEN", "")
    with pytest.raises(GitHubAuthError, match="GITHUB_TOKEN"):
        GitHubClient.from_environment({"GITHUB_REPOSITORY": REPO})


def test_run_list_follows_link_pagination_and_matches_labels_exactly(github):
    wanted = RunLabels("smollm2-135m", "1", "smollm2-135m.1.aaaa").title()
    github.add_run("fleet.yml", wanted, age=10)
    github.add_run("fleet.yml", wanted, status="completed", conclusion="success", age=20)
    github.add_run("fleet.yml", RunLabels("smollm2-135m-q8", "1", "x").title(), age=30)   # a longer name
    github.add_run("fleet.yml", RunLabels("smollm2-135m", "10", "y").title(), age=40)     # instance 10, not 1
    github.add_run("fleet.yml", "smollm2-135m instance 1 by hand", age=50)                # not one of ours
    with client() as gh:
        runs = gh.find_runs("fleet.yml", model="smollm2-135m", instance="1", per_page=2)
        every = gh.find_runs("fleet.yml", model="smollm2-135m", instance="1", active_only=False, per_page=2)
    assert [r.title for r in runs] == [wanted]
    assert [r.status for r in every] == ["in_progress", "completed"]
    assert github.list_requests == 6      # three pages each


def test_titles_round_trip_and_reject_strangers():
    labels = RunLabels("gemma3-270m", "2", "gemma3-270m.2.beef")
    assert parse_title(labels.title()) == labels
    assert parse_title("arena-fleetish model=x instance=1") is None
    assert parse_title("fleet") is None
    assert RunLabels("m", "all").covers("m", "3")
    assert not RunLabels("m-x", "all").covers("m", "3")


def test_run_dispatch_finds_a_lagging_run_by_labels_and_never_dispatches_twice(github):
    """No run id (here a 502 after the run was made), and the run list behind the dispatch: the
    run is looked up by its exact labels until it shows, and never dispatched again."""
    github.list_lag = 2
    github.fail_next = ["created-502"]
    labels = RunLabels("smollm2-135m", "1", "smollm2-135m.1.new0")
    with client() as gh:
        dispatch = RunDispatch(gh, "fleet.yml", "main", {"model": "smollm2-135m", "instance": "1",
                                                         "instance_id": labels.instance_id}, labels)
        dispatch.dispatch()
        assert dispatch.run_id is None
        assert [dispatch.check(), dispatch.check()] == ["pending", "pending"]
        assert dispatch.check() == "running" and dispatch.run_id == github.runs[-1].id
        github.runs[-1].status, github.runs[-1].conclusion = "completed", "failure"
        assert dispatch.check() == "ended"
    assert len([r for r in github.requests if r.endswith("/dispatches")]) == 1 and len(github.runs) == 1


def test_run_dispatch_is_lost_only_after_the_lookup_window(github):
    now = [1000.0]
    github.list_lag = 10**6             # never listed
    labels = RunLabels("m", "1", "m.1.x")
    with client() as gh:
        dispatch = RunDispatch(gh, "fleet.yml", "main", {"model": "smollm2-135m"}, labels,
                               lookup_seconds=180, clock=lambda: now[0])
        github.run_details = False
        dispatch.dispatch()
        now[0] += 170
        assert dispatch.check() == "pending"
        now[0] += 20
        assert dispatch.check() == "lost"


def test_dispatcher_sends_the_successors_labels_and_reports_a_run_that_ended(github):
    request = SuccessorRequest("smollm2-135m", "1", "smollm2-135m.1.new0", "smollm2-135m.1.old0", 5.5)
    with client() as gh:
        dispatcher = GitHubDispatcher(gh, "fleet.yml", "main")
        launched = dispatcher.launch(request)
        assert dispatcher.failed(launched) is None
        github.runs[-1].status, github.runs[-1].conclusion = "completed", "failure"
        why = dispatcher.failed(launched)
    assert why and "failure" in why
    assert dispatcher.poll_seconds >= 30
    sent = github.dispatches[-1]["inputs"]
    assert sent == {"model": "smollm2-135m", "instances": "1", "instance": "1",
                    "instance_id": "smollm2-135m.1.new0", "predecessor_id": "smollm2-135m.1.old0",
                    "duration_hours": "5.5", "auto_restart": "true"}
    assert github.runs[-1].title == RunLabels("smollm2-135m", "1", "smollm2-135m.1.new0").title()


def test_dispatcher_rides_out_a_rate_limit(github):
    request = SuccessorRequest("smollm2-135m", "1", "smollm2-135m.1.new0", "smollm2-135m.1.old0", 5.5)
    with client() as gh:
        dispatcher = GitHubDispatcher(gh, "fleet.yml", "main")
        launched = dispatcher.launch(request)
        github.fail_next = ["secondary"]
        assert dispatcher.failed(launched) is None      # not a failure of the successor: ask later
        assert dispatcher.failed(launched) is None
