"""The arena in a real browser (Debian's Chromium) against a real gateway and real model services.

Screenshots of compare, battle and leaderboard, light and dark, land in build/screenshots/ on
every run. Answers are kept short (max tokens) because the models run on a shared CPU.
"""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.arena.conftest import DISPLAY, MODELS, wait_models
from tests.harness import ManagedProcess, assert_openai_error, free_port, start_gateway, wait_until

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, shot  # noqa: E402,F401 (re-exported)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()




@pytest.fixture
def page_errors():
    return []


def new_page(browser, page_errors, *, width=1280, height=900, scheme="light", **context_args):
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme,
                                  **context_args)
    page = context.new_page()
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("dialog", lambda d: (page_errors.append(f"dialog: {d.message}"), d.dismiss()))
    return page


def set_max_tokens(page, n: int) -> None:
    page.click("#settings summary")
    page.fill("#max-tokens", str(n))
    page.fill("#temperature", "0")
    page.click("#settings summary")


def toggle_theme(page, expected: str) -> None:
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == expected


def slots_active(service: ManagedProcess) -> int:
    return httpx.get(service.url + "/health/details", timeout=5).json()["slots"]["active"]


def test_compare_two_models_stream_side_by_side(fleet, browser, page_errors):
    page = new_page(browser, page_errors)
    page.goto(fleet["gateway"].url + "/")
    for model in MODELS:
        expect(page.locator(f".chip[data-model='{model}'] input")).to_be_checked()
    set_max_tokens(page, 24)

    # Shift+Enter adds a line and sends nothing; Enter sends.
    page.click("#prompt")
    page.keyboard.type("Name three colors.")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("One per line.")
    assert page.input_value("#prompt") == "Name three colors.\nOne per line."
    assert page.locator(".msg.user").count() == 0
    page.keyboard.press("Enter")

    panels = page.locator("#compare-panels .panel")
    expect(panels).to_have_count(2)
    for model in MODELS:
        panel = page.locator(f"#compare-panels .panel[data-key='{model}']")
        expect(panel.locator(".panel-title")).to_contain_text(DISPLAY[model])
        expect(panel).to_have_attribute("data-status", "done", timeout=120_000)
        assert panel.locator(".msg.assistant").inner_text().strip()
        assert panel.locator(".msg.user").inner_text() == "Name three colors.\nOne per line."
        ttft = panel.locator("[data-stat=ttft] b").inner_text()
        tokens = panel.locator("[data-stat=tokens] b").inner_text()
        assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", ttft), ttft
        assert 0 < int(tokens) <= 24
        assert re.fullmatch(r"\d+\.\d", panel.locator("[data-stat=tps] b").inner_text())
    assert page.input_value("#prompt") == ""
    shot(page, "compare-light")
    toggle_theme(page, "dark")
    shot(page, "compare-dark")

    # A second turn continues each panel's own conversation.
    page.fill("#prompt", "And one more?")
    page.keyboard.press("Enter")
    for model in MODELS:
        panel = page.locator(f"#compare-panels .panel[data-key='{model}']")
        expect(panel.locator(".msg.user")).to_have_count(2)
        expect(panel).to_have_attribute("data-status", "done", timeout=120_000)
        expect(panel.locator(".msg.assistant")).to_have_count(2)
    assert page_errors == []
    page.context.close()


def test_stop_cancels_one_model_while_the_other_goes_on(fleet, browser, page_errors):
    page = new_page(browser, page_errors)
    page.goto(fleet["gateway"].url + "/")
    expect(page.locator(".chip[data-model='gemma3-270m'] input")).to_be_checked()
    set_max_tokens(page, 200)
    # Both models (greedy) continue this for all 200 tokens, so the other one is still streaming.
    page.fill("#prompt", "Continue the sequence: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")
    page.keyboard.press("Enter")
    stopped = page.locator("#compare-panels .panel[data-key='smollm2-135m']")
    other = page.locator("#compare-panels .panel[data-key='gemma3-270m']")
    expect(stopped).to_have_attribute("data-status", "streaming", timeout=60_000)
    expect(other).to_have_attribute("data-status", "streaming", timeout=60_000)
    stopped.locator("button.stop").click()
    expect(stopped).to_have_attribute("data-status", "stopped")
    expect(stopped.locator(".msg.note")).to_have_text("Stopped.")
    partial = stopped.locator(".msg.assistant").inner_text()
    # The upstream generation is cancelled: the service frees the slot.
    wait_until(lambda: slots_active(fleet["services"]["smollm2-135m"]) == 0, 15, interval=0.2, what="the slot freed")
    # ...while the other model keeps streaming.
    assert other.get_attribute("data-status") == "streaming"
    time.sleep(1.0)
    assert stopped.locator(".msg.assistant").inner_text() == partial
    page.click("#stop-all")
    expect(other).to_have_attribute("data-status", "stopped")
    assert page_errors == []
    page.context.close()


def test_battle_vote_reveals_names_and_moves_the_leaderboard(fleet, browser, page_errors):
    gateway = fleet["gateway"].url
    before = httpx.get(gateway + "/api/leaderboard").json()["votes"]
    page = new_page(browser, page_errors)
    seen_before_vote: list[str] = []

    def record(response):
        if "/api/battles" in response.url and "/vote" not in response.url:
            try:
                seen_before_vote.append(response.text())
            except Exception:  # a stream cut short has no body to read
                pass

    page.on("response", record)
    page.goto(gateway + "/#battle")
    expect(page.locator("#battle-view")).to_be_visible()
    set_max_tokens(page, 24)
    page.fill("#prompt", "What is the capital of France?")
    page.keyboard.press("Enter")
    for side in ("a", "b"):
        panel = page.locator(f"#battle-panels .panel[data-key='{side}']")
        expect(panel.locator(".panel-title")).to_have_text(f"Model {side.upper()}")
        expect(panel).to_have_attribute("data-status", "done", timeout=120_000)
    expect(page.locator("#vote-bar")).to_be_visible()
    # Nothing the browser received so far names a model.
    page.remove_listener("response", record)
    received = "\n".join(seen_before_vote)
    assert "Model A" in received and "Model B" in received
    for event in re.findall(r"^data: (\{.*\})$", received, flags=re.M):
        assert json.loads(event).get("model") in (None, "Model A", "Model B")
    for model in MODELS:
        assert model not in received
    for model, name in DISPLAY.items():
        assert name not in page.locator("#battle-panels .panel-title").all_inner_texts()
    shot(page, "battle-light")

    page.click("#vote-bar button[data-winner='model_a']")
    titles = page.locator("#battle-panels .panel-title")
    expect(titles.first).to_contain_text("Model A: ")
    revealed = {page.locator(f"#battle-panels .panel[data-key='{s}']").get_attribute("data-model") for s in "ab"}
    assert revealed == set(MODELS)
    for side in "ab":
        model = page.locator(f"#battle-panels .panel[data-key='{side}']").get_attribute("data-model")
        expect(page.locator(f"#battle-panels .panel[data-key='{side}'] .panel-title")).to_contain_text(DISPLAY[model])
    expect(page.locator("#battle-result")).to_contain_text("You voted A is better")
    assert page.locator("#vote-bar button[data-winner='model_b']").is_disabled()
    toggle_theme(page, "dark")
    shot(page, "battle-dark")
    winner = page.locator("#battle-panels .panel[data-key='a']").get_attribute("data-model")

    board = httpx.get(gateway + "/api/leaderboard").json()
    assert board["votes"] == before + 1
    assert board["models"][0]["model"] == winner or before > 0
    votes = [json.loads(line) for line in httpx.get(gateway + "/api/votes.jsonl").text.splitlines()]
    assert votes[-1]["prompt"] == "What is the capital of France?" and votes[-1]["model_a"] == winner

    page.goto(gateway + "/leaderboard")
    row = page.locator(f"#ratings tbody tr[data-model='{winner}']")
    expect(row).to_be_visible()
    assert int(row.locator("td.battles").inner_text()) >= 1
    expect(page.locator("#ratings-hint")).to_contain_text(f"{before + 1} vote")
    expect(page.locator("#matrix tbody tr")).to_have_count(2)
    shot(page, "leaderboard-dark")
    toggle_theme(page, "light")
    shot(page, "leaderboard-light")
    assert page_errors == []
    page.context.close()


def open_battle_page(browser, page_errors, gateway: str, max_tokens: int):
    """A page on the battle tab with short answers; its page and the two side panels."""
    page = new_page(browser, page_errors)
    page.goto(gateway + "/#battle")
    set_max_tokens(page, max_tokens)
    return page, {s: page.locator(f"#battle-panels .panel[data-key='{s}']") for s in "ab"}


def ask_both(page, panels, prompt: str) -> None:
    """Send `prompt` and wait for both sides to finish answering it."""
    asked = panels["a"].locator(".msg.user").count()
    page.fill("#prompt", prompt)
    page.keyboard.press("Enter")
    for panel in panels.values():
        expect(panel.locator(".msg.user")).to_have_count(asked + 1)  # this prompt's turn has begun
        expect(panel).to_have_attribute("data-status", "done", timeout=120_000)


def test_a_multi_turn_battle_then_a_vote(fleet, browser, page_errors):
    gateway = fleet["gateway"].url
    page, panels = open_battle_page(browser, page_errors, gateway, 16)
    prompts = ["What is the capital of France?", "What is the capital of Italy?"]
    for turn, prompt in enumerate(prompts, start=1):
        expect(page.locator("#send")).to_have_text("Battle" if turn == 1 else "Ask both")
        ask_both(page, panels, prompt)
        expect(page.locator("#vote-bar")).to_be_visible()
        expect(page.locator("#battle-result")).to_contain_text("whole conversation")
        # Blind: no speed, no token count on the panels before the vote.
        for panel in panels.values():
            expect(panel.locator(".stats.blind")).to_be_visible()
            expect(panel.locator(".stats:not(.blind)")).to_be_hidden()
    for panel in panels.values():
        expect(panel.locator(".msg.user")).to_have_text(prompts)
        expect(panel.locator(".msg.assistant")).to_have_count(2)
    shot(page, "battle-multi-turn-light")
    toggle_theme(page, "dark")
    shot(page, "battle-multi-turn-dark")
    toggle_theme(page, "light")

    page.click("#vote-bar button[data-winner='model_b']")
    expect(page.locator("#battle-result")).to_contain_text("You voted B is better")
    for panel in panels.values():
        expect(panel.locator(".stats:not(.blind)")).to_be_visible()  # speed, now that it is revealed
        assert panel.locator("[data-stat='tokens'] b").inner_text() not in ("", "–")
    votes = [json.loads(line) for line in httpx.get(gateway + "/api/votes.jsonl").text.splitlines()]
    assert [t["user"] for t in votes[-1]["turns"]] == prompts and votes[-1]["winner"] == "model_b"
    assert "multi_turn" in votes[-1]["categories"] and "client" not in votes[-1]
    # The next prompt starts a new battle.
    expect(page.locator("#send")).to_have_text("Battle")
    assert page_errors == []
    page.context.close()


def test_a_reload_restores_the_battle_and_new_warns_before_abandoning_it(fleet, browser, page_errors):
    gateway = fleet["gateway"].url
    page, panels = open_battle_page(browser, page_errors, gateway, 8)
    ask_both(page, panels, "What is the capital of Spain?")
    answers = {s: panels[s].locator(".msg.assistant").inner_text() for s in "ab"}
    assert re.fullmatch(r".*#battle/[A-Za-z0-9_-]+", page.url)
    battle_url = page.url

    page.reload()
    for side, panel in panels.items():
        expect(panel.locator(".msg.user")).to_have_text(["What is the capital of Spain?"])
        expect(panel.locator(".msg.assistant")).to_have_text([answers[side]])
    expect(page.locator("#vote-bar")).to_be_visible()
    expect(page.locator("#send")).to_have_text("Ask both")
    # New on an unvoted battle warns first and keeps it.
    page.click("#reset")
    expect(page.locator("#battle-result")).to_contain_text("press New again to abandon it")
    expect(panels["a"].locator(".msg.assistant")).to_have_count(1)
    page.click("#vote-bar button[data-winner='tie']")
    expect(page.locator("#battle-result")).to_contain_text("You voted a tie")

    # The battle's URL in another browser: the revealed battle, to read.
    other = new_page(browser, page_errors)
    other.goto(battle_url)
    expect(other.locator("#battle-result")).to_contain_text("You voted a tie")
    for side in "ab":
        expect(other.locator(f"#battle-panels .panel[data-key='{side}'] .msg.assistant")).to_have_text([answers[side]])
        assert other.locator(f"#battle-panels .panel[data-key='{side}']").get_attribute("data-model") in MODELS
    assert page_errors == []
    other.context.close()
    page.context.close()


def test_keyboard_vote_and_answers_cut_at_the_limit_say_so(fleet, browser, page_errors):
    gateway = fleet["gateway"].url
    page, panels = open_battle_page(browser, page_errors, gateway, 3)
    ask_both(page, panels, "Tell me a long story about a lighthouse keeper and the sea.")
    # Three tokens cannot finish a long story: a side that was cut says so instead of a bare "done".
    cut = [p for p in panels.values() if p.locator(".msg.ending").count()]
    assert cut and all(p.locator(".msg.ending").inner_text() in ("Cut at the token limit.",) for p in cut)
    # Both answers in: the focus is on the vote bar, and one key votes.
    expect(page.locator("#vote-bar button[data-winner='model_a']")).to_be_focused()
    assert page.locator("#vote-bar button[data-winner='model_b']").get_attribute("aria-keyshortcuts") == "B"
    # In the Compare view the battle's keys do nothing (its vote bar is not on screen).
    page.click("#tab-compare")
    page.locator("#tab-compare").focus()
    page.keyboard.press("a")
    page.click("#tab-battle")
    expect(page.locator("#battle-result")).not_to_contain_text("You voted")
    page.locator("#vote-bar button[data-winner='model_b']").focus()
    page.keyboard.press("b")
    expect(page.locator("#battle-result")).to_contain_text("You voted B is better")
    assert page_errors == []
    page.context.close()


def test_compare_clamps_max_tokens_to_each_models_limit_and_says_so(fleet, browser, page_errors):
    page = new_page(browser, page_errors)
    sent: dict[str, int] = {}
    page.on("request", lambda r: sent.update({json.loads(r.post_data)["model"]: json.loads(r.post_data)["max_tokens"]})
            if r.url.endswith("/v1/chat/completions") else None)
    page.goto(fleet["gateway"].url + "/")
    for model in MODELS:
        expect(page.locator(f".chip[data-model='{model}'] input")).to_be_checked()
    expect(page.locator("#compare-empty")).to_be_visible()  # what to do, until the first prompt
    set_max_tokens(page, 4096)
    page.fill("#prompt", "Count from one to a thousand.")
    page.click("#send")
    expect(page.locator("#compare-empty")).to_be_hidden()
    wait_until(lambda: len(sent) == 2, 10, what="both requests sent")
    page.click("#stop-all")
    # gemma3-270m takes at most 512, smollm2-135m at most 1024 (the catalogue's max_tokens_limit).
    assert sent == {"gemma3-270m": 512, "smollm2-135m": 1024}
    for model, limit in sent.items():
        expect(page.locator(f"#compare-panels .panel[data-key='{model}'] .msg.clamped")).to_have_text(
            f"Max tokens 4096 is above this model's limit: asked for {limit}.")
    assert page_errors == []
    page.context.close()


def test_phone_sized_screen(fleet, browser, page_errors):
    page = new_page(browser, page_errors, width=390, height=844, scheme="dark", is_mobile=True, has_touch=True)
    page.goto(fleet["gateway"].url + "/")
    expect(page.locator(".chip[data-model='smollm2-135m'] input")).to_be_checked()
    page.locator(".chip[data-model='gemma3-270m']").click()  # just one model on a phone
    expect(page.locator("#compare-panels .panel")).to_have_count(1)
    set_max_tokens(page, 16)
    page.fill("#prompt", "Say hi.")
    page.click("#send")
    panel = page.locator("#compare-panels .panel[data-key='smollm2-135m']")
    expect(panel).to_have_attribute("data-status", "done", timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for selector in ("#send", "#prompt", "#theme-toggle", "#tab-battle"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
    shot(page, "compare-phone-dark")
    page.click("#tab-battle")
    expect(page.locator("#battle-view")).to_be_visible()
    page.fill("#prompt", "Name a fruit.")
    page.click("#send")
    for side in "ab":
        expect(page.locator(f"#battle-panels .panel[data-key='{side}']")).to_have_attribute(
            "data-status", re.compile("done|stopped|error"), timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    if page.locator("#vote-bar").is_visible():
        # Stacked panels: A is above, B below, and the labels say so.
        assert "↑" in page.locator("#vote-bar button[data-winner='model_a']").inner_text()
        assert "↓" in page.locator("#vote-bar button[data-winner='model_b']").inner_text()
        bar, prompt = page.locator("#vote-bar").bounding_box(), page.locator("#prompt").bounding_box()
        assert bar and prompt and bar["y"] + bar["height"] <= prompt["y"] <= 844  # in view, above the composer
    shot(page, "battle-phone-dark")
    page.goto(fleet["gateway"].url + "/leaderboard")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page_errors == []
    page.context.close()


HOSTILE_ANSWER = """# Answer

Here is an image <img src=x onerror="window.__xss='img';alert('img')"> and
[a link](javascript:window.__xss='md-link') and <a href="javascript:window.__xss='a'">another</a>.

<script>window.__xss = 'script'; alert('script')</script>
<svg onload="window.__xss='svg'"><circle r="4"/></svg>
<details open ontoggle="window.__xss='details'"><summary>more</summary>hidden</details>
<iframe src="javascript:window.__xss='iframe'"></iframe>
<p style="background:url(javascript:window.__xss='style')" onclick="window.__xss='click'">click me</p>

| fruit | color |
|-------|-------|
| apple | red   |

```python
print("hello")
```
"""


def test_hostile_model_output_executes_nothing(browser, page_errors, tmp_path):
    """The sanitizer alone must hold: the page's CSP is bypassed here, so nothing else would."""
    answer = tmp_path / "answer.md"
    answer.write_text(HOSTILE_ANSWER)
    port = free_port()
    upstream = ManagedProcess("scripted-upstream", ["--port", str(port), "--model", "smollm2-135m",
                                                    "--answer-file", str(answer), "--chunk-delay", "0.01"], port,
                              module="tests.fake_upstream")
    gateway = None
    try:
        upstream.start().wait_ready("/health", 60)
        gateway = start_gateway(env={"ARENA_FLEET__DATA_DIR": str(tmp_path / "data"),
                                     "SMOLLM2_135M_API_URL": upstream.url, "GEMMA3_270M_API_URL": ""})
        wait_models(gateway.url, ("smollm2-135m",))
        page = new_page(browser, page_errors, bypass_csp=True)
        page.goto(gateway.url + "/")
        expect(page.locator(".chip[data-model='smollm2-135m'] input")).to_be_checked()
        page.fill("#prompt", "Show me something.")
        page.keyboard.press("Enter")
        panel = page.locator("#compare-panels .panel[data-key='smollm2-135m']")
        expect(panel).to_have_attribute("data-status", "done", timeout=30_000)
        md = panel.locator(".msg.assistant")
        # It rendered: heading, table, code block with its copy button, the harmless parts.
        expect(md.locator("h1")).to_have_text("Answer")
        expect(md.locator("table td").first).to_have_text("apple")
        expect(md.locator("pre button.copy-code")).to_have_count(1)
        expect(md.locator("img")).to_have_count(1)
        # Nothing hostile survived, and nothing ran, even when clicked.
        assert md.locator("script, svg, iframe, [style]").count() == 0
        handlers = md.evaluate("el => [...el.querySelectorAll('*')].flatMap(n => [...n.attributes]"
                               ".filter(a => a.name.startsWith('on')).map(a => n.tagName + ' ' + a.name))")
        assert handlers == []
        hrefs = md.evaluate("el => [...el.querySelectorAll('a')].map(a => a.getAttribute('href'))")
        assert all(h is None or not h.strip().lower().startswith("javascript:") for h in hrefs), hrefs
        for link in md.locator("a").all():
            link.click(modifiers=["Alt"])  # Alt: do not open a tab if a safe href were left
        md.locator("p", has_text="click me").click()
        page.wait_for_timeout(500)
        assert page.evaluate("window.__xss") is None
        assert page_errors == []
        page.context.close()
    finally:
        if gateway:
            gateway.stop()
        upstream.stop()


def test_arena_api_errors_are_openai_shaped(fleet):
    gateway = fleet["gateway"].url

    assert assert_openai_error(httpx.post(gateway + "/api/battles", json={"prompt": ""}), 400)["param"] == "prompt"
    assert_openai_error(httpx.post(gateway + "/api/battles", json={"prompt": "hi", "temperature": 9}), 400)
    assert_openai_error(httpx.post(gateway + "/api/battles", content=b"{not json",
                                   headers={"content-type": "application/json"}), 400)
    assert_openai_error(httpx.post(gateway + "/api/battles/nope/vote", json={"winner": "tie"}), 404, "battle_not_found")
    battle = httpx.post(gateway + "/api/battles", json={"prompt": "Say yes.", "max_tokens": 4}).json()
    assert battle["revealed"] is None and "model_a" not in json.dumps(battle)
    url = gateway + f"/api/battles/{battle['id']}"
    mine = {"X-Battle-Token": battle["token"]}
    # Only the client that opened the battle, once both sides finished, once.
    assert_openai_error(httpx.post(url + "/vote", json={"winner": "model_a"}, headers=mine), 409, "battle_not_finished")
    assert_openai_error(httpx.post(url + "/vote", json={"winner": "draw"}, headers=mine), 400)
    assert_openai_error(httpx.post(url + "/sides/c/stream", headers=mine), 404, "side_not_found")
    assert_openai_error(httpx.post(url + "/sides/a/stream"), 403, "invalid_battle_token")
    for side in "ab":
        with httpx.stream("POST", url + f"/sides/{side}/stream", headers=mine, timeout=120) as r:
            assert r.status_code == 200 and "data: [DONE]" in r.read().decode()
    assert_openai_error(httpx.post(url + "/sides/a/stream", headers=mine), 409, "side_already_streamed")
    for other in ({}, {"X-Battle-Token": "not-the-token"}):
        assert_openai_error(httpx.post(url + "/vote", json={"winner": "model_a"}, headers=other), 403, "invalid_battle_token")
        assert_openai_error(httpx.post(url + "/turns", json={"prompt": "more"}, headers=other), 403, "invalid_battle_token")
    assert_openai_error(httpx.post(url + "/turns", json={"prompt": "x" * 9000}, headers=mine), 400, "prompt_too_long")
    assert httpx.post(url + "/vote", json={"winner": "tie"}, headers=mine).status_code == 200
    assert_openai_error(httpx.post(url + "/vote", json={"winner": "tie"}, headers=mine), 409, "already_voted")
    assert_openai_error(httpx.post(url + "/turns", json={"prompt": "more"}, headers=mine), 409, "already_voted")
    revealed = httpx.get(gateway + f"/api/battles/{battle['id']}").json()["revealed"]
    assert {revealed["a"]["model"], revealed["b"]["model"]} == set(MODELS)
