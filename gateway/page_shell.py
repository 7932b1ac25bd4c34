"""The pages' shell: `web/templates/page.html` (head, top bar, theme toggle, <main>), a Jinja2
template every page extends, so each page writes only what is its own (its scripts, its tabs if
they differ, its main). The arena's pages (`index.html`, `leaderboard.html`, `modes.html` in
`web/templates/`) and the admin pages (`web/admin/shell.html`) extend it; the pages the gateway
builds on the server (`/status`, `/leaderboard/method`, `/share/...`) render it with their own
`main` (`render_page`)."""

from __future__ import annotations

import functools
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

WEB_DIR = Path(__file__).resolve().parent / "web"
TEMPLATE_DIRS = (WEB_DIR / "templates", WEB_DIR / "admin")
# The theme toggle of the pages whose own script does not run it.
THEME_SCRIPT = '  <script type="module" src="/static/arena/js/theme-page.js"></script>\n'


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    return Environment(loader=FileSystemLoader([str(d) for d in TEMPLATE_DIRS]), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, keep_trailing_newline=True,
                       auto_reload=True)


def render_template(name: str, **context: object) -> str:
    """A page template with `context`; raises OSError when a template is missing from the install."""
    from jinja2 import TemplateNotFound

    defaults = {"title": "", "current": "", "head": "", "main": "", "tail": ""}
    try:
        return environment().get_template(name).render(**{**defaults, **context})
    except TemplateNotFound as exc:
        raise FileNotFoundError(f"page template {exc.name} is missing") from None


def render_page(title: str, current: str, main: str, *, head: str = "", tail: str = "") -> str:
    """`main` (HTML the caller built and escaped) inside the shell; `current` names the top bar's tab
    of this page (status, leaderboard), `title` is text (escaped here)."""
    return render_template("page.html", title=title, current=current, head=Markup(THEME_SCRIPT + head),
                           main=Markup(main), tail=Markup(tail))
