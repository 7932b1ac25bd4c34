"""The one retry scaffold of the fleet's HTTP clients (GitHub, Cloudflare, the gateway).

A client raises `TransientError` (or a subclass) for a failure a later attempt may not meet,
with the server's hint when it gave one (`Retry-After`, a rate-limit reset). `call` retries
that error with tenacity: the hint when there is one, else exponential backoff, never more than
`max_wait` per wait and never more than `attempts` tries. A hint longer than `max_wait` is not
slept through: the error goes to the caller, who knows whether it can afford to wait (a runner's
serving loop cannot). Every other exception passes at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

T = TypeVar("T")


class TransientError(RuntimeError):
    """A failure worth another attempt; `retry_after` is the server's wait hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 1.0        # first wait without a hint; doubles each attempt
    max_wait: float = 60.0      # no single wait is longer, whatever the server hinted

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "retry_after", None)
        computed = self.backoff * (2 ** (state.attempt_number - 1))
        return max(0.0, min(self.max_wait, hinted if hinted is not None else computed))

    def worth_retrying(self, exc: BaseException) -> bool:
        if not isinstance(exc, TransientError):
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_wait

    def call(self, fn: Callable[[], T]) -> T:
        retrying = Retrying(retry=retry_if_exception(self.worth_retrying), stop=stop_after_attempt(self.attempts),
                            wait=self.wait, reraise=True)
        for attempt in retrying:
            with attempt:
                return fn()
        raise AssertionError("unreachable")
