"""Categories of a battle's prompt, by simple rules anyone can check (see the README).

A battle may fall in several categories, or none besides "overall". The rules look at the
user's turns only (never at the answers, so a model cannot move its battle into a category):

- `code`: a fenced code block, or a programming word ("python", "function", "compile", "regex",
  "sql", "bug", ...), or a line that looks like code (`def f(`, `x = y;`, `#include`);
- `math`: arithmetic between numbers ("12 * 7", "3^2"), or a math word ("solve", "equation",
  "integral", "derivative", "probability", "prime", ...);
- `creative_writing`: "write/compose a poem/story/haiku/song/limerick/...", or "imagine", "fiction";
- `long_prompt`: the user's turns hold at least LONG_PROMPT_CHARS characters together;
- `multi_turn`: the battle has more than one user turn.
"""

from __future__ import annotations

import re
from typing import Sequence

OVERALL = "overall"
CATEGORIES = ("code", "math", "creative_writing", "long_prompt", "multi_turn")
LONG_PROMPT_CHARS = 1000

_CODE = re.compile(
    r"```|\b(python|javascript|typescript|java|rust|golang|c\+\+|bash|shell script|sql|regex|regexp|html|css|"
    r"function|compile[sd]?|compiler|debug|bug|stack trace|api|json|yaml|algorithm|code|coding|program)\b|"
    r"^\s*(def |class |import |from \S+ import |#include|public static|fn |let |const |SELECT )|[;{}]\s*$",
    re.IGNORECASE | re.MULTILINE)
_MATH = re.compile(
    r"\d\s*[-+*/^×÷=]\s*\d|\b(solve|equation|integral|derivative|calculate|compute|arithmetic|algebra|"
    r"geometry|probability|prime|factorial|sqrt|square root|percent(age)?|math|maths|mathematics|sum of)\b",
    re.IGNORECASE)
_CREATIVE = re.compile(
    r"\b(write|compose|create|tell)\b[^.?!\n]{0,40}\b(poem|story|haiku|song|lyrics|limerick|sonnet|fable|tale|"
    r"script|joke|verse|rhyme)s?\b|\b(imagine|fiction|fictional|once upon a time)\b",
    re.IGNORECASE)


def categorize(user_turns: Sequence[str]) -> list[str]:
    """The categories of a battle whose user wrote `user_turns` (in CATEGORIES order)."""
    text = "\n".join(user_turns)
    found = set()
    if _CODE.search(text):
        found.add("code")
    if _MATH.search(text):
        found.add("math")
    if _CREATIVE.search(text):
        found.add("creative_writing")
    if len(text) >= LONG_PROMPT_CHARS:
        found.add("long_prompt")
    if len(user_turns) > 1:
        found.add("multi_turn")
    return [c for c in CATEGORIES if c in found]
