"""What can go wrong when starting or stopping instances (mapped to HTTP in `gateway.errors`)."""

from __future__ import annotations

from shared.errors import DomainError


class ControlNotConfigured(DomainError):
    """This gateway has no fleet to start instances in (the message says how to configure one)."""


class SupervisorUnavailable(DomainError):
    """The local fleet's supervisor did not answer."""


class SupervisorBadAnswer(DomainError):
    """The local fleet's supervisor answered something that is not its control API's shape."""


class FleetRefused(DomainError):
    """The fleet refused the request (e.g. too many instances of the model)."""


class GitHubFailed(DomainError):
    """GitHub refused or failed a dispatch, list or cancel."""


class RunNotFound(DomainError):
    """No active workflow run carries this instance."""


class InstanceNotFound(DomainError):
    def __init__(self, instance_id: str) -> None:
        super().__init__(f"No instance '{instance_id}' is known here.", param="instance_id")


class ModelHasInstances(DomainError):
    """A model cannot be removed while instances of it run (the message names them)."""


class OperationInProgress(DomainError):
    """A rolling restart of this model is already running."""


class InvalidAction(DomainError):
    def __init__(self, action: str | None) -> None:
        super().__init__(f"'action' must be 'load' or 'unload', not {action!r}.", param="action")


class OverlayTooLarge(DomainError):
    """The catalogue overlay is larger than a runner reads."""


class PublishConflict(DomainError):
    """The repository's overlay file kept changing while it was published."""


class GitHubRateLimited(GitHubFailed):
    """GitHub's rate limit: `retry_after` says when to try again."""


def github_failure(exc: Exception) -> GitHubFailed:
    """The domain error for a failure of the GitHub client (a rate limit keeps its wait)."""
    from scripts.github_api import GitHubRateLimited as ClientRateLimited

    if isinstance(exc, ClientRateLimited):
        return GitHubRateLimited(f"GitHub: {exc}", retry_after=exc.retry_after)
    return GitHubFailed(f"GitHub: {exc}")
