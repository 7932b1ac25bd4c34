"""`model: "auto"`: pick a ready model by the catalogue's routing rules.

The first rule with a keyword in the last user message (or the prompt) wins, if its model has
a ready instance; otherwise the catalogue's default, otherwise the first ready model.
"""

from __future__ import annotations

from typing import Any

from shared.catalogue import Routing

AUTO_MODEL = "auto"


def last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):  # content parts
                    return " ".join(part.get("text", "") for part in content
                                    if isinstance(part, dict) and isinstance(part.get("text"), str))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], str):
        return prompt[-1]
    return ""


class AutoRouter:
    def __init__(self, routing: Routing) -> None:
        self.routing = routing

    def choose(self, body: dict[str, Any], ready_models: list[str]) -> str | None:
        if not ready_models:
            return None
        text = last_user_text(body).lower()
        for rule in self.routing.rules:
            if rule.model in ready_models and any(keyword.lower() in text for keyword in rule.keywords):
                return rule.model
        if self.routing.default in ready_models:
            return self.routing.default
        return ready_models[0]
