"""The shell (`web/page.html`: head, top bar, theme) of the pages the gateway renders on the
server, `/status` and `/leaderboard/method`, so they look and navigate like the arena's pages."""

from __future__ import annotations

from pathlib import Path

SHELL = Path(__file__).resolve().parent / "web" / "page.html"


def render_page(title: str, current: str, main: str, *, head: str = "", tail: str = "") -> str:
    """`main` inside the shell; `current` names the top bar's link of this page (its data-page).
    `title` is text (escaped by the caller if it comes from data); raises OSError when the shell
    is missing from the install."""
    shell = SHELL.read_text(encoding="utf-8")
    return (shell.replace("<!--TITLE-->", title).replace("<!--HEAD-->\n", head)
            .replace("<!--MAIN-->", main).replace("<!--TAIL-->\n", tail)
            .replace(f'data-page="{current}"', f'data-page="{current}" aria-current="page"'))
