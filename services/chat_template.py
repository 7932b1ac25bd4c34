"""Turn OpenAI chat messages into a prompt with the model's chat template.

The template is the catalogue's override if it has one, else the GGUF's own
`tokenizer.chat_template`, else ChatML. Templates are rendered in Jinja's sandbox, as
Hugging Face's tokenizers do (trim_blocks, lstrip_blocks, `raise_exception`).
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.exceptions import InvalidMessages, UnsupportedContent

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
        parts.append(part.get("text", ""))
    return "".join(parts)


class ChatTemplate:
    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise_exception
        self.source = source or CHATML_TEMPLATE
        self._template = env.from_string(self.source)
        self.bos_token = bos_token
        self.eos_token = eos_token

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
        except TemplateError as exc:
            raise InvalidMessages(f"The chat template could not render these messages: {exc}") from exc
