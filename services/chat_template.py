"""Turn OpenAI chat messages into a prompt with the model's chat template.

The template is the catalogue's override if it has one, else the GGUF's own
`tokenizer.chat_template`, else ChatML. Templates are rendered in Jinja's sandbox, as
Hugging Face's tokenizers do (trim_blocks, lstrip_blocks, `raise_exception`).
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.exceptions import InvalidMessages, InvalidParameter, UnsupportedContent

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class _TemplateRaised(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or OpenAI content parts of type text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise UnsupportedContent(f"content parts of type {part.get('type')!r} are not supported by this text model")
        parts.append(part.get("text") or "")
    return "".join(parts)


# Errors a template raises on data it did not expect (a string added to a number, a missing key),
# which the request's messages or variables can cause.
_RENDER_ERRORS = (TemplateError, TypeError, ValueError, LookupError, ArithmeticError, RecursionError)


class ChatTemplate:
    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise_exception
        self.source = source or CHATML_TEMPLATE
        self._template = env.from_string(self.source)
        self.bos_token = bos_token
        self.eos_token = eos_token
        # What a request's `chat_template_kwargs` may not set: what the service passes and the
        # environment's own functions (`raise_exception`, `range`, `namespace`...).
        self.reserved = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token",
                                   *env.globals})

    def variables(self, kwargs: dict | None) -> dict:
        """`chat_template_kwargs` (e.g. Qwen3's `enable_thinking`): plain values, small, and never
        one of the names the service or the environment sets."""
        if not kwargs:
            return {}
        bad = sorted(set(kwargs) & self.reserved)
        if bad:
            raise InvalidParameter(f"chat_template_kwargs may not set {', '.join(bad)}.", param="chat_template_kwargs")
        if any(not isinstance(v, (str, int, float, bool, type(None))) or (isinstance(v, str) and len(v) > 256)
               for v in kwargs.values()):
            raise InvalidParameter("chat_template_kwargs values must be short strings, numbers or booleans.",
                                   param="chat_template_kwargs")
        return dict(kwargs)

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders a `tools` list (as Hugging Face's tool-aware ones do)."""
        return "tools" in self.source

    def render(self, messages: list[dict[str, Any]], **variables: Any) -> str:
        """`variables`: what a template may read beyond the messages (`tools`, `enable_thinking`)."""
        normalized = [{**message, "content": message_text(message.get("content"))} for message in messages]
        try:
            return self._template.render(messages=normalized, add_generation_prompt=True,
                                         bos_token=self.bos_token, eos_token=self.eos_token, **variables)
        except _TemplateRaised as exc:
            raise InvalidMessages(f"The model's chat template rejected the messages: {exc}") from exc
        except _RENDER_ERRORS as exc:
            raise InvalidMessages(f"The chat template could not render these messages: "
                                  f"{type(exc).__name__}: {exc}"[:1000]) from exc
