"""Reasoning models: the text between thinking markers goes to `reasoning_content`.

Models that think (DeepSeek R1 distills, Qwen3, SmolLM3, Phi-4 mini reasoning...) open their
answer with a block such as ``<think> ... </think>``; some templates open the block themselves
at the end of the prompt (the answer then starts inside it and only the end marker appears).
`ReasoningSplitter` cuts the streamed text into (thinking, answer) as it comes, holding back
any tail that may be the start of a marker.
"""

from __future__ import annotations

from dataclasses import dataclass

# (start, end) markers, the most common first. A template that mentions one pair uses it.
MARKERS = (("<think>", "</think>"), ("<thinking>", "</thinking>"), ("[THINK]", "[/THINK]"),
           ("<|begin_of_thought|>", "<|end_of_thought|>"))


@dataclass(frozen=True)
class ReasoningMarkers:
    start: str
    end: str
    starts_inside: bool = False  # the prompt ends with `start`: the answer begins in the thinking

    @classmethod
    def for_template(cls, template_source: str, prompt: str) -> "ReasoningMarkers":
        start, end = next(((s, e) for s, e in MARKERS if s in template_source), MARKERS[0])
        return cls(start, end, prompt.rstrip().endswith(start))


def _held_tail(text: str, marker: str) -> int:
    """Length of the longest tail of `text` that is a start of `marker`."""
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0


class ReasoningSplitter:
    """Splits one choice's text into thinking and answer. Thinking is only recognised at the
    start of the answer (after whitespace), as reasoning models write it."""

    def __init__(self, markers: ReasoningMarkers) -> None:
        self.markers = markers
        self._state = "thinking" if markers.starts_inside else "start"
        self._held = ""

    def push(self, text: str, *, final: bool) -> tuple[str, str]:
        held = self._held + text
        self._held = ""
        thinking = answer = ""
        if self._state == "start":
            stripped = held.lstrip()
            if stripped.startswith(self.markers.start):
                self._state = "thinking"
                held = stripped[len(self.markers.start):]
            elif not final and self.markers.start.startswith(stripped):
                self._held = held  # may still become the start marker
                return "", ""
            else:
                self._state = "answer"
        if self._state == "thinking":
            at = held.find(self.markers.end)
            if at == -1:
                keep = 0 if final else _held_tail(held, self.markers.end)
                thinking, self._held = held[: len(held) - keep], held[len(held) - keep:]
                return thinking, ""
            thinking, held = held[:at], held[at + len(self.markers.end):].lstrip("\n")
            self._state = "answer"
            if not held and not final:
                self._state = "after-end"
                return thinking, ""
        if self._state == "after-end":  # drop the newlines that follow the end marker
            held = held.lstrip("\n")
            if not held and not final:
                return thinking, ""
            self._state = "answer"
        answer = held
        return thinking, answer
