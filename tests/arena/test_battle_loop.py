"""After the vote: New round, Regenerate (the earlier answer kept), Share (a read-only link opened
in a fresh browser); the prompt's token estimate and long prompts; the new APIs' refusals.

Real browser, real gateway, real models (the arena's shared fleet). Answers are kept short.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.arena.conftest import DISPLAY, MODELS
from tests.arena.test_browser import ask_both, browser, new_page, open_battle_page, page_errors  # noqa: F401
from tests.harness import assert_openai_error

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

PROMPT = "What is the capital of Portugal?"


def keys_of(value) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_of(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_of(v)}
    return set()


def test_new_round_regenerate_and_a_share_link_read_elsewhere(fleet, browser, page_errors):  # noqa: F811 (fixtures)
    gateway = fleet["gateway"].url
    page, panels = open_battle_page(browser, page_errors, gateway, 10)
    ask_both(page, panels, PROMPT)
    answers = {s: panels[s].locator(".msg.assistant").inner_text() for s in "ab"}
    battle_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#after-vote")).to_be_hidden()  # nothing of this before the vote
    page.keyboard.press("a")
    expect(page.locator("#battle-result")).to_contain_text("You voted A is better")
    actions = page.locator("#after-vote")
    expect(actions).to_be_visible()

    # Regenerate A: the earlier answer folds into "Previous answer", a new one streams under it.
    actions.locator("[data-regenerate='a']").click()
    previous = panels["a"].locator("details.previous")
    expect(previous).to_have_count(1)
    expect(previous.locator("summary")).to_have_text("Previous answer")
    expect(panels["a"]).to_have_attribute("data-status", "done", timeout=120_000)
    expect(panels["a"].locator(":scope .transcript > .msg.assistant")).to_have_count(1)
    assert previous.locator(".msg.assistant").text_content().strip() == answers["a"].strip()
    expect(panels["b"].locator("details.previous")).to_have_count(0)
    expect(panels["a"].locator("[data-stat=tokens] b")).not_to_have_text("–")
    # The vote stays on what was shown when it was cast.
    view = httpx.get(f"{gateway}/api/battles/{battle_id}").json()
    assert view["vote"] == "model_a" and view["regenerated"] == {"a": 1}
    assert view["voted_answers"]["a"].strip() == answers["a"].strip()

    # Share: a link with an unguessable id and no prompt text, read in a fresh browser.
    actions.locator("[data-action=share]").click()
    link = page.locator("#battle-share a")
    expect(link).to_be_visible()
    url = link.get_attribute("href")
    assert re.fullmatch(re.escape(gateway) + r"/share/[A-Za-z0-9_-]{20,}", url), url
    assert "Portugal" not in url and battle_id not in url
    other = new_page(browser, page_errors)
    other.goto(url)
    shared = other.locator("#shared-panels .panel")
    expect(shared).to_have_count(2)
    expect(other.locator("#shared-summary")).to_contain_text("Model A was better")
    for side in "ab":
        panel = other.locator(f"#shared-panels .panel[data-key='{side}']")
        model = panel.get_attribute("data-model")
        assert model in MODELS
        expect(panel.locator(".panel-title")).to_contain_text(DISPLAY[model])
        expect(panel.locator(".msg.user")).to_have_text([PROMPT])
    expect(other.locator("#shared-panels .panel[data-key='a'] details.previous summary")).to_have_text("Answer voted on")
    # Read-only: nothing to type, vote or regenerate, and nothing about the voter.
    assert other.locator("textarea, input, #vote-bar, #after-vote").count() == 0
    share = httpx.get(gateway + "/api/shares/" + url.rsplit("/", 1)[1]).json()
    assert not {"client", "token", "token_hash"} & keys_of(share)
    other.context.close()

    # New round: the same prompt, drawn again, in a new battle.
    actions.locator("[data-action=new-round]").click()
    expect(page).not_to_have_url(re.compile(re.escape(battle_id)))
    for panel in panels.values():
        expect(panel.locator(".msg.user")).to_have_text([PROMPT])
        expect(panel).to_have_attribute("data-status", "done", timeout=120_000)
        expect(panel.locator(".panel-title")).to_have_text(re.compile(r"^Model [AB]$"))  # blind again
    expect(page.locator("#vote-bar button[data-winner='tie']")).to_be_enabled()
    # An unvoted battle cannot be shared: that would reveal the pair.
    new_id = page.url.rsplit("/", 1)[1]
    token = page.evaluate(f"sessionStorage.getItem('arena-battle-token:{new_id}')")
    refused = assert_openai_error(httpx.post(f"{gateway}/api/battles/{new_id}/share",
                                             headers={"X-Battle-Token": token}), 409, "battle_not_voted")
    assert "Vote on this battle first" in refused["message"]
    assert page_errors == []
    page.context.close()


def test_the_token_estimate_warns_and_a_long_prompt_folds_above_its_error(fleet, browser, page_errors):  # noqa: F811 (fixtures)
    page = new_page(browser, page_errors)
    page.goto(fleet["gateway"].url + "/")
    for model in MODELS:
        expect(page.locator(f".chip[data-model='{model}'] input")).to_be_checked()
    estimate = page.locator("#token-estimate")
    page.fill("#prompt", "Name a color.")
    expect(estimate).to_contain_text("of 2,048")  # both models have 2,048 tokens of context
    expect(estimate).not_to_have_class(re.compile("over"))
    long_prompt = "Summarise this. " + "The sea was calm and the sky was grey. " * 240  # ~9,000 characters
    page.fill("#prompt", long_prompt)
    expect(estimate).to_have_class(re.compile("over"))
    expect(estimate).to_contain_text("more than")
    page.keyboard.press("Enter")  # warned, not sent
    expect(estimate).to_contain_text("Send again to send it anyway")
    assert page.locator(".msg.user").count() == 0
    page.keyboard.press("Enter")
    for model in MODELS:
        panel = page.locator(f"#compare-panels .panel[data-key='{model}']")
        expect(panel).to_have_attribute("data-status", "error", timeout=60_000)
        prompt = panel.locator(".msg.user")
        expect(prompt).to_have_class(re.compile("collapsed"))
        box = prompt.bounding_box()
        assert box and box["height"] < 260  # folded, not 9,000 characters tall
        expect(panel.locator(".msg.error")).to_be_in_viewport()
        prompt.locator("button.expand").click()
        expect(prompt).not_to_have_class(re.compile("collapsed"))
    assert page_errors == []
    page.context.close()


def test_the_new_endpoints_refuse_bad_input_in_openai_shape(fleet):
    gateway = fleet["gateway"].url
    assert_openai_error(httpx.get(gateway + "/api/shares/no-such-share"), 404, "share_not_found")
    panel = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"},
                                                    {"role": "assistant", "content": "Hello"}]}
    for body, code in (({"panels": []}, None), ({"panels": [{**panel, "model": "nope"}]}, "model_not_found"),
                       ({"panels": [panel, panel]}, "duplicate_model"),
                       ({"panels": [{**panel, "messages": [{"role": "system", "content": "x"}]}]}, None),
                       ({"panels": [{**panel, "messages": [{"role": "user", "content": "x" * 9000}] * 4}]},
                        "conversation_too_long")):
        assert_openai_error(httpx.post(gateway + "/api/shares", json=body), 400, code)
    made = httpx.post(gateway + "/api/shares", json={"panels": [panel]}).json()
    shared = httpx.get(gateway + "/api/shares/" + made["id"]).json()
    assert shared["compare"]["panels"][0]["display_name"] == DISPLAY["smollm2-135m"]

    battle = httpx.post(gateway + "/api/battles", json={"prompt": "Say yes.", "max_tokens": 4}).json()
    url, mine = gateway + f"/api/battles/{battle['id']}", {"X-Battle-Token": battle["token"]}

    def stream(side: str) -> None:
        with httpx.stream("POST", url + f"/sides/{side}/stream", headers=mine, timeout=120) as r:
            assert r.status_code == 200 and "data: [DONE]" in r.read().decode()

    for side in "ab":
        stream(side)
    # Before the vote: no regenerate (a second chance for one side would bias it), no new round, no share.
    for path, body in (("/regenerate", {"sides": ["a"]}), ("/rounds", None), ("/share", None)):
        assert_openai_error(httpx.post(url + path, json=body, headers=mine), 409, "battle_not_voted")
    assert_openai_error(httpx.post(url + "/regenerate", json={"sides": ["c"]}, headers=mine), 400)
    assert_openai_error(httpx.post(url + "/regenerate", json={"sides": []}, headers=mine), 400)
    assert httpx.post(url + "/vote", json={"winner": "model_b"}, headers=mine).status_code == 200
    assert_openai_error(httpx.post(url + "/regenerate", json={"sides": ["a"]}), 403, "invalid_battle_token")
    assert_openai_error(httpx.post(url + "/share"), 403, "invalid_battle_token")
    voted = httpx.get(url).json()["sides"]["a"]["answer"]
    limit = battle["max_regenerations"]
    for n in range(limit):
        assert httpx.post(url + "/regenerate", json={"sides": ["a"]}, headers=mine).status_code == 200
        if n == 0:  # a side waiting for its new answer is not regenerated again
            assert_openai_error(httpx.post(url + "/regenerate", json={"sides": ["a", "b"]}, headers=mine), 409,
                                "battle_not_finished")
        stream("a")
    assert_openai_error(httpx.post(url + "/regenerate", json={"sides": ["a"]}, headers=mine), 409,
                        "too_many_regenerations")
    # The vote, and the answer it applied to, did not change.
    view = httpx.get(url).json()
    assert view["vote"] == "model_b" and view["regenerated"] == {"a": limit}
    assert view["voted_answers"]["a"] == voted
    vote = [json.loads(line) for line in httpx.get(gateway + "/api/votes.jsonl").text.splitlines()
            if json.loads(line)["battle_id"] == battle["id"]]
    assert len(vote) == 1 and vote[0]["answer_a"] == voted and vote[0]["winner"] == "model_b"
    # Sharing twice gives the one link; a new round is a new battle with the same prompt.
    first = httpx.post(url + "/share", headers=mine).json()
    assert httpx.post(url + "/share", headers=mine).json()["id"] == first["id"]
    fresh = httpx.post(url + "/rounds", headers=mine)
    assert fresh.status_code == 201 and fresh.json()["prompt"] == "Say yes." and fresh.json()["id"] != battle["id"]
    assert fresh.json()["token"] != battle["token"]
