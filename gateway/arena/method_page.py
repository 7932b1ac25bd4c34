"""The page `/leaderboard/method`: `web/leaderboard-method.md` (the one text of the method, which
the README links to) rendered into `web/method.html`. The text is package data, so an installed
gateway serves it too. Raw HTML in the Markdown is not passed through (markdown-it's html=False)."""

from __future__ import annotations

import functools
from pathlib import Path

from markdown_it import MarkdownIt

METHOD_FILE = "leaderboard-method.md"
TEMPLATE = "method.html"


@functools.lru_cache(maxsize=4)
def _render(web_dir: Path, mtimes: tuple[float, float]) -> str:
    text = (web_dir / METHOD_FILE).read_text(encoding="utf-8")
    body = MarkdownIt("commonmark", {"html": False}).render(text)
    return (web_dir / TEMPLATE).read_text(encoding="utf-8").replace("<!--METHOD-->", body.rstrip("\n"))


def render_method_page(web_dir: Path) -> str:
    """The page's HTML; raises OSError when a file is missing from the install."""
    mtimes = ((web_dir / METHOD_FILE).stat().st_mtime, (web_dir / TEMPLATE).stat().st_mtime)
    return _render(web_dir, mtimes)
