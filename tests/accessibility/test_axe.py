"""axe-core (from npm, gateway/web/node_modules, installed by scripts/install_web_assets.sh) run
inside every page of pages.yaml, light and dark: no critical or serious violation."""

from __future__ import annotations

import pytest

from tests.accessibility.conftest import PAGES, open_page, page_ids
from tests.arena.test_browser import browser  # noqa: F401 (the fixture)
from tests.harness import PROJECT_ROOT

pytestmark = pytest.mark.browser

AXE = PROJECT_ROOT / "gateway" / "web" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("critical", "serious")


@pytest.fixture(scope="module")
def axe_source() -> str:
    assert AXE.is_file(), f"{AXE} is missing: run scripts/install_web_assets.sh (npm ci in gateway/web)"
    return AXE.read_text(encoding="utf-8")


def readable(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:6]:
            lines.append(f"    at {' '.join(map(str, node['target']))}")
            lines.append("       " + node.get("failureSummary", "").replace("\n", "\n       "))
        if len(v["nodes"]) > 6:
            lines.append(f"    ... and {len(v['nodes']) - 6} more")
    return "\n".join(lines)


def run_axe(page, source: str) -> list[dict]:
    """axe's violations on the page as it is now (the script is evaluated by the test driver, so
    the page's Content-Security-Policy, which allows no inline script, stays on)."""
    page.evaluate(source)
    return page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
            nodes: v.nodes.map(n => ({target: n.target, failureSummary: n.failureSummary}))}));
    }""")


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("spec", PAGES, ids=page_ids())
def test_no_serious_accessibility_violation(site, browser, axe_source, spec, scheme):  # noqa: F811
    page = open_page(browser, site, spec, viewport={"width": 1280, "height": 900}, color_scheme=scheme)
    try:
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches") == (scheme == "dark")
        violations = [v for v in run_axe(page, axe_source) if v["impact"] in BLOCKING]
        assert not violations, f"{spec['path']} ({scheme}):\n{readable(violations)}"
    finally:
        page.context.close()
