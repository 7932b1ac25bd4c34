"""Publishing the runtime catalogue overlay to the fleet's repository, for the runners on Actions.

A runner on GitHub Actions reads the catalogue of its checkout, never the gateway's store: the
overlay reaches it as the file `config/catalogue.overlay.yaml` (`OVERLAY_PATH`), merged over the
catalogue by `shared.catalogue.load_catalogue` (the runner workflow sets ARENA_CATALOGUE_OVERLAY).
`OverlayPublisher.publish()` makes that file on the branch the runs start from equal to the
store's overlay with GitHub's contents API: read the file's blob sha (`GET .../contents/{path}
?ref=`), and, when its bytes differ, one commit (`PUT` with the message, the base64 content, the
sha and the branch). A 409 "does not match" or a 422 "sha wasn't supplied" means someone wrote
the file meanwhile: read it again and write over it (the store is the overlay's one source), at
most `attempts` times. Publications run one at a time; each GitHub call is bounded by the
client's timeout, the whole by `timeout`. The token never leaves the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import yaml

from gateway.instance_control.errors import GitHubFailed, OverlayTooLarge, PublishConflict, github_failure
from scripts.github_api import GitHubClient, GitHubError, GitHubFileConflict
from shared.catalogue import MAX_OVERLAY_BYTES

log = logging.getLogger("gateway.instance_control.overlay")

OVERLAY_PATH = "config/catalogue.overlay.yaml"


@dataclass(frozen=True)
class Publication:
    """One publication: where, what it changed (`commit` is None when the file already said so)."""

    repository: str
    branch: str
    path: str
    blob_sha: str
    commit: str | None
    html_url: str | None
    at: float

    def public(self) -> dict[str, Any]:
        return {"object": "catalogue_publication", **asdict(self), "changed": self.commit is not None}

    def audit_detail(self) -> dict[str, Any]:
        """What the audit log keeps of it."""
        return {"commit": self.commit, "branch": self.branch, "path": self.path}


class OverlayPublisher:
    def __init__(self, client: GitHubClient, overlay_text: Callable[[], str], *, branch: str | None = None,
                 path: str = OVERLAY_PATH, attempts: int = 3, timeout: float = 120.0) -> None:
        """`overlay_text`: the overlay file's text now (`CatalogueOverlay.overlay_yaml`);
        `branch`: the branch the runner workflow is dispatched on (default: the repository's)."""
        self.client = client
        self.overlay_text = overlay_text
        self.branch = branch
        self.path = path
        self.attempts = attempts
        self.timeout = timeout
        self.last: Publication | None = None
        self._lock = asyncio.Lock()

    async def publish(self, *, actor: str = "", reason: str = "") -> Publication:
        """Make the repository's overlay file the store's overlay; the publication."""
        async with self._lock:
            data = self.overlay_text().encode("utf-8")
            if len(data) > MAX_OVERLAY_BYTES:
                raise OverlayTooLarge(f"The catalogue overlay is {len(data)} bytes, more than the {MAX_OVERLAY_BYTES} "
                                      "a runner reads: remove runtime models before publishing.")
            message = "Runtime catalogue overlay" + (f": {reason}" if reason else "") + \
                (f" (published by the gateway's admin side, {actor})" if actor else " (published by the gateway)")
            try:
                publication = await asyncio.wait_for(asyncio.to_thread(self._publish, data, message), self.timeout)
            except asyncio.TimeoutError:
                raise GitHubFailed(f"GitHub: publishing {self.path} took more than {self.timeout:.0f}s; "
                                   "it may have landed: publish again to find out.") from None
            except GitHubError as exc:
                raise github_failure(exc) from exc
            self.last = publication
            log.info("catalogue overlay on %s@%s: %s", self.client.repository, publication.branch,
                     f"commit {publication.commit}" if publication.commit else "already up to date")
            return publication

    async def read(self) -> tuple[Any, str] | None:
        """The repository's overlay file, parsed, and where it was read; None when there is none."""
        def fetch() -> tuple[str, Any]:
            branch = self._branch()
            return branch, self.client.get_file(self.path, branch)

        try:
            branch, current = await asyncio.wait_for(asyncio.to_thread(fetch), self.timeout)
        except asyncio.TimeoutError:
            raise GitHubFailed(f"GitHub: reading {self.path} took more than {self.timeout:.0f}s.") from None
        except GitHubError as exc:
            raise github_failure(exc) from exc
        if current is None:
            return None
        if len(current.content) > MAX_OVERLAY_BYTES:
            raise OverlayTooLarge(f"{self.path} on {branch} is {len(current.content)} bytes, more than the "
                                  f"{MAX_OVERLAY_BYTES} a runner reads.")
        return yaml.safe_load(current.content.decode("utf-8")), f"{self.client.repository}@{branch}:{self.path}"

    def _branch(self) -> str:
        """The branch the runs start from: the one given, else the repository's default (a GitHub
        call: in a worker thread)."""
        return self.branch or self.client.default_branch()

    def _publish(self, data: bytes, message: str) -> Publication:
        branch = self._branch()
        for _ in range(self.attempts):
            current = self.client.get_file(self.path, branch)
            if current is not None and current.content == data:
                return Publication(self.client.repository, branch, self.path, current.sha, None, current.html_url or None,
                                   time.time())
            try:
                commit = self.client.put_file(self.path, data, message=message, branch=branch,
                                              sha=current.sha if current is not None else None)
            except GitHubFileConflict as exc:
                log.info("catalogue overlay: %s changed meanwhile (%s); reading it again", self.path, exc)
                continue
            return Publication(self.client.repository, branch, self.path, commit.blob_sha, commit.commit_sha,
                               commit.html_url or None, time.time())
        raise PublishConflict(f"{self.path} on {branch} kept changing while it was published ({self.attempts} "
                              "attempts): something else writes it; publish again.")
