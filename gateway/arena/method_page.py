"""The page `/leaderboard/method`: `web/leaderboard-method.md` (the one text of the method, which
the README links to) rendered into the server pages' shell. The text is package data, so an
installed gateway serves it too. Raw HTML in the Markdown is not passed through (html=False)."""

from __future__ import annotations

import functools
from pathlib import Path

from markdown_it import MarkdownIt

from gateway.page_shell import render_page

METHOD_FILE = Path(__file__).resolve().parents[1] / "web" / "leaderboard-method.md"

_LINKS = """    <p class="board-links"><a href="/leaderboard">Back to the leaderboard</a></p>"""


@functools.lru_cache(maxsize=1)
def _render(mtime: float) -> str:
    body = MarkdownIt("commonmark", {"html": False}).render(METHOD_FILE.read_text(encoding="utf-8"))
    main = f'    <article class="card md method-text">\n{body.rstrip()}\n    </article>\n{_LINKS}'
    return render_page("How the leaderboard is made", "leaderboard", main)


def render_method_page() -> str:
    """The page's HTML; raises OSError when its text or the shell is missing from the install."""
    return _render(METHOD_FILE.stat().st_mtime)
