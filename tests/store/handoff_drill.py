"""The gateway handoff drill's client: chat requests and votes every few hundred milliseconds
through whichever gateway answers, and the figures the drill reports."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.store.arena_client import battle_and_vote

RETRY_FOR = 15.0  # seconds one operation keeps trying before it counts as failed


@dataclass
class DrillFigures:
    requests_ok: int = 0
    requests_failed: int = 0
    votes_cast: int = 0
    votes_found: int = 0
    seconds_unanswered: float = 0.0
    switches: int = 0
    battle_ids: list[str] = field(default_factory=list)

    def line(self, store: str) -> str:
        return (f"gateway handoff on {store}: {self.requests_ok} requests ok, {self.requests_failed} failed, "
                f"{self.votes_cast} votes cast, {self.votes_found} on the successor's leaderboard, "
                f"{self.seconds_unanswered:.2f} s with no gateway answering")


class DrillClient:
    """Sends a chat request and casts a vote every `period` seconds, like a user of the arena.

    It sticks to one gateway and moves to the other when that one refuses (a 503, as a draining
    gateway answers) or cannot be reached, as a tunnel with two connectors would. Time from a
    refused or unreachable attempt to the next response that is not a 503 is added up: the time
    with no gateway answering.
    """

    def __init__(self, urls: list[str], chat_body: dict, *, period: float = 0.3) -> None:
        self.urls = urls
        self.chat_body = chat_body
        self.period = period
        self.active = 0
        self.figures = DrillFigures()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-client")
        self._http = httpx.Client(timeout=30, event_hooks={"response": [self._answered]})
        self._failing_since: float | None = None

    def _answered(self, response: httpx.Response) -> None:
        if response.status_code != 503 and self._failing_since is not None:
            self.figures.seconds_unanswered += time.monotonic() - self._failing_since
            self._failing_since = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> DrillFigures:
        self._stop.set()
        self._thread.join(RETRY_FOR * 5)
        self._http.close()
        return self.figures

    def _attempt(self, operation) -> bool:
        """Run `operation(url)` on the current gateway, moving to the other on refusal, until it answers."""
        deadline = time.monotonic() + RETRY_FOR
        while time.monotonic() < deadline:
            url = self.urls[self.active]
            try:
                operation(url)
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                if status is not None and status != 503:
                    raise
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                self.active = (self.active + 1) % len(self.urls)
                self.figures.switches += 1
                self._stop.wait(0.02)
                continue
            return True
        return False

    def _chat(self, url: str) -> None:
        self._http.post(f"{url}/v1/chat/completions", json=self.chat_body).raise_for_status()

    def _vote(self, url: str) -> None:
        # Each step goes through whichever gateway serves now: the battle lives in the shared store.
        # Each battle is another user's (the arena allows a user 10 battles a minute).
        n = len(self.figures.battle_ids) + self.figures.switches
        user = f"198.51.{n // 250}.{n % 250 + 1}"
        self.figures.battle_ids.append(battle_and_vote(self._http, url, user=user))

    def _run(self) -> None:
        while not self._stop.is_set():
            tick = time.monotonic()
            if self._attempt(self._chat):
                self.figures.requests_ok += 1
            else:
                self.figures.requests_failed += 1
            if self._attempt(self._vote):
                self.figures.votes_cast += 1
            else:
                self.figures.requests_failed += 1
            self._stop.wait(max(0.0, self.period - (time.monotonic() - tick)))
