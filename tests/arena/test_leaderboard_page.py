"""The leaderboard page in a real browser: charts drawn, categories, style control, both themes.

The gateway runs with no model (the leaderboard needs none) over a store filled with votes
through the store's own API: a synthetic arena where 'verbose' writes long answers that win.
"""

from __future__ import annotations

import httpx
import pytest

from tests.arena.synthetic_votes import fill_store
from tests.arena.test_browser import browser, new_page, shot  # noqa: F401 (browser: a fixture)
from tests.harness import assert_openai_error, start_gateway

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ADMIN_KEY = "admin-key-for-tests"


@pytest.fixture(scope="module")
def board_gateway(tmp_path_factory):
    data = tmp_path_factory.mktemp("board-data")
    fill_store(data / "gateway.sqlite3")
    gateway = start_gateway(env={"ARENA_FLEET__DATA_DIR": str(data), "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false",
                                 "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY})
    try:
        yield gateway.url
    finally:
        gateway.stop()




def canvas_has_ink(page, canvas_id: str) -> int:
    """Pixels of the canvas that are not transparent: a chart that drew something has many."""
    return page.evaluate("""(id) => {
        const c = document.getElementById(id);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n; }""", canvas_id)


def test_the_api_has_boards_per_category_and_leaves_flagged_votes_out(board_gateway):
    board = httpx.get(board_gateway + "/api/leaderboard").json()
    assert board["votes"] == 91 and board["counted"] == 90 and board["excluded"] == {"identity": 1}
    cats = board["categories"]
    assert cats["code"]["battles"] + cats["math"]["battles"] + cats["creative_writing"]["battles"] < 90
    assert cats["code"]["battles"] > 10 and cats["math"]["battles"] > 10 and cats["multi_turn"]["battles"] == 0
    overall = {m["model"]: m for m in cats["overall"]["models"]}
    # Long answers win here: style control pulls 'verbose' down and 'terse' up.
    assert overall["verbose"]["style_controlled"]["rating"] < overall["verbose"]["rating"]
    assert overall["terse"]["style_controlled"]["rating"] > overall["terse"]["rating"]
    assert cats["overall"]["style_coefficients"]["answer_tokens"] > 0
    method = httpx.get(board_gateway + "/leaderboard/method")
    assert method.status_code == 200 and "upper bound" in method.text


def test_charts_categories_and_style_control_in_the_page(board_gateway, browser):  # noqa: F811 (the fixture)
    errors: list[str] = []
    for scheme in ("light", "dark"):
        page = new_page(browser, errors, scheme=scheme, height=1400)
        page.goto(board_gateway + "/leaderboard")
        expect(page.locator("html")).to_have_attribute("data-ready", "true")
        for chart in ("chart-intervals", "chart-speed", "chart-counts"):
            expect(page.locator(f"#{chart}")).to_have_attribute("data-rendered", "3" if chart != "chart-counts" else "9")
            assert canvas_has_ink(page, chart) > 500, chart
        rows = page.locator("#ratings tbody tr")
        expect(rows).to_have_count(3)
        assert rows.first.get_attribute("data-model") == "verbose"
        plain = page.locator("#ratings tbody tr[data-model='verbose'] td.rating").inner_text()
        page.check("#style-control")
        styled = page.locator("#ratings tbody tr[data-model='verbose'] td.rating").inner_text()
        assert int(styled) < int(plain)
        page.uncheck("#style-control")
        shot(page, f"leaderboard-charts-{scheme}")
        # A category's board: fewer battles, its own hint.
        page.select_option("#category", "math")
        expect(page.locator("html")).to_have_attribute("data-category", "math")
        math_battles = sum(int(x) for x in page.locator("#ratings td.battles").all_inner_texts()) // 2
        overall = httpx.get(board_gateway + "/api/leaderboard").json()["categories"]["math"]["battles"]
        assert math_battles == overall
        expect(page.locator("#ratings-hint")).to_contain_text(f"{overall} counted battles in this category")
        shot(page, f"leaderboard-math-{scheme}")
        page.context.close()
    assert errors == []



def test_a_flood_is_visible_to_the_admin_and_can_be_excluded(board_gateway):
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(board_gateway + "/api/admin/arena/clients").status_code == 401
    clients = httpx.get(board_gateway + "/api/admin/arena/clients", headers=admin).json()
    top = clients["data"][0]
    assert (top["client"], top["votes_recent"], top["flood"], top["excluded"]) == ("addr:203.0.113.66", 70, True, False)
    assert not any(c["flood"] for c in clients["data"][1:]) and clients["has_more"] is False
    page = httpx.get(board_gateway + "/api/admin/arena/clients?limit=5&offset=1", headers=admin).json()
    assert page["data"] == clients["data"][1:6] and page["has_more"] is True
    for bad in ("limit=0", "limit=1001", "offset=-1"):
        assert_openai_error(httpx.get(f"{board_gateway}/api/admin/arena/clients?{bad}", headers=admin), 400)
    excluded = httpx.post(board_gateway + "/api/admin/arena/excluded-clients", headers=admin,
                          json={"client": top["client"], "reason": "flood"})
    assert excluded.status_code == 201
    try:
        board = httpx.get(board_gateway + "/api/leaderboard", timeout=30).json()
        assert board["counted"] == 20 and board["excluded"] == {"identity": 1, "excluded_client": 70}
    finally:
        gone = httpx.delete(board_gateway + "/api/admin/arena/excluded-clients/addr:203.0.113.66", headers=admin)
        assert gone.status_code == 200
    assert httpx.get(board_gateway + "/api/leaderboard", timeout=30).json()["counted"] == 90
