"""What can go wrong in the model service, as plain exceptions. The engine, the generation
code, sampling and chat templates raise these; `services.errors` maps them to HTTP answers."""

from __future__ import annotations

from shared.errors import DomainError, ModelNotFound

__all__ = ["ContextTooLong", "Draining", "GenerationCancelled", "GenerationFailed", "InferenceFailed",
           "InvalidMessages", "InvalidParameter", "SchemaTooLarge", "ModelLoadFailed", "ModelLoading", "ModelNotFound", "QueueFull",
           "ServiceStopping", "UnsupportedContent", "UnsupportedParameter"]


class InvalidParameter(DomainError):
    """A request field has a value this service cannot use."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message, param=param)


class SchemaTooLarge(InvalidParameter):
    """A JSON schema whose grammar would be too large or too deep to build safely."""


class UnsupportedParameter(InvalidParameter):
    """A request field OpenAI defines that this service does not implement."""


class ContextTooLong(DomainError):
    def __init__(self, n_ctx: int, n_prompt: int, *, at_least: bool = False) -> None:
        """`at_least`: `n_prompt` is a lower bound (the prompt was not tokenized whole)."""
        has = f"at least {n_prompt}" if at_least else f"{n_prompt}"
        super().__init__(f"This model's context is {n_ctx} tokens; the prompt has {has}. Shorten the messages.",
                         param="messages")


class UnsupportedContent(DomainError):
    """A message holds content this text model cannot read (images, audio)."""


class InvalidMessages(DomainError):
    """The chat template cannot render the messages."""


class ModelLoading(DomainError):
    def __init__(self) -> None:
        super().__init__("The model is still loading.", retry_after=2)


class ModelLoadFailed(DomainError):
    def __init__(self, reason: str | None) -> None:
        super().__init__(f"The model failed to load: {reason}")


class QueueFull(DomainError):
    def __init__(self, retry_after: int) -> None:
        super().__init__("The model service is at capacity: every slot is busy and the queue is full. Retry shortly.",
                         retry_after=retry_after)


class Draining(DomainError):
    def __init__(self) -> None:
        super().__init__("The model service is shutting down and takes no new requests.", retry_after=1)


class ServiceStopping(DomainError):
    """The scheduler stopped with this request still in it."""


class GenerationCancelled(DomainError):
    def __init__(self) -> None:
        super().__init__("The request was cancelled.")


class InferenceFailed(DomainError):
    """llama.cpp failed to decode."""


class GenerationFailed(DomainError):
    """An unexpected failure while generating (a bug, not the request's fault)."""
