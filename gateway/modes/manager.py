"""Starting sessions: checks and bounds, the model clients, the run, its stream and its record.

`ModesService.open(mode, request, client)` checks the request against the settings and the
fleet (raising `ApiError` before anything starts), counts the start against the client's
per-minute limit (the catalogue's `arena.sessions_per_minute`, shared by replicas), takes one
of the client's session slots, and returns a `SessionStream`: the session's events as SSE
bytes. The session runs in its own task; closing the stream (the client went away, or pressed
Stop) cancels that task, which cancels every generation it started and frees the slot. The transcript is saved when the
session starts and when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from gateway.arena.clients import ClientIdentifier, ClientLimits
from gateway.keys import RateLimiter
from gateway.modes.chat import ChatClient, ExternalChat
from gateway.modes.council import Council
from gateway.modes.discussion import Discussion
from gateway.modes.roundtable import Roundtable
from gateway.modes.session import (MODES, Limits, ModeRequest, Session, Speaker, Transcript, make_participants,
                                   new_session_id)
from gateway.modes.settings import EXTERNAL, ModesSettings
from gateway.modes.transcripts import TranscriptRepository
from shared.catalogue import Catalogue
from shared.errors import ApiError

log = logging.getLogger("gateway.modes")


def sse_event(event: dict[str, Any]) -> bytes:
    return (f"event: {event['type']}\ndata: ".encode()
            + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


class ClientSlots:
    """Sessions running at once, per client and in all."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._counts: dict[str, int] = {}

    def running(self, client: str | None = None) -> int:
        return self._counts.get(client, 0) if client is not None else sum(self._counts.values())

    def acquire(self, client: str) -> Callable[[], None]:
        if self.running() >= self.total:
            raise ApiError(503, "The gateway is running as many sessions as it allows; try again shortly.",
                           code="too_many_sessions", headers={"Retry-After": "10"})
        if self._counts.get(client, 0) >= self.per_client:
            raise ApiError(429, f"You already run {self.per_client} session(s) at once; wait for one to finish "
                                "or stop it.", code="too_many_sessions", headers={"Retry-After": "10"})
        self._counts[client] = self._counts.get(client, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._counts[client] -= 1
                if not self._counts[client]:
                    del self._counts[client]

        return release


class SessionStream:
    """The events of one session as SSE bytes. Iterating starts it; `aclose()` stops it."""

    def __init__(self, run: Callable[[], Any], queue: asyncio.Queue, release: Callable[[], None]) -> None:
        self._run = run
        self._queue = queue
        self._release = release
        self._task: asyncio.Task | None = None

    def __aiter__(self) -> "SessionStream":
        return self

    async def __anext__(self) -> bytes:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            # However the run ends, the stream ends: a second end marker is harmless.
            self._task.add_done_callback(lambda _: self._queue.put_nowait(None))
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        try:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with suppress(asyncio.CancelledError):
                    await self._task
        finally:
            self._release()


@dataclass
class Prepared:
    mode: str
    request: ModeRequest
    max_tokens: int
    orchestrator: Speaker | None


class ModesService:
    def __init__(self, catalogue: Catalogue, settings: ModesSettings, fleet: ChatClient,
                 ready_models: Callable[[], Iterable[str]], repository: TranscriptRepository,
                 external: ExternalChat | None = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.ready_models = ready_models
        self.repository = repository
        self.external = external
        self.slots = ClientSlots(settings.sessions_per_client, settings.max_sessions)
        self.clients = ClientIdentifier(catalogue.arena.trusted_proxies)
        self.limits = ClientLimits(catalogue.arena, RateLimiter(repository.db))
        self.use_catalogue(catalogue)

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """Read the models from `catalogue` from now on (the admin's runtime overlay publishes a
        new one when a model is added or changed); sessions already running keep theirs."""
        self.catalogue = catalogue
        self.display_names = {k: m.display_name for k, m in catalogue.models.items()}
        self.modes = {
            "discussion": Discussion({k: m.profile for k, m in catalogue.models.items()}),
            "council": Council([n for m in catalogue.models.values()
                                for n in (m.key, m.display_name, *m.profile.identity_words)]),
            "roundtable": Roundtable(),
        }

    # -- checks ------------------------------------------------------------------------

    def check(self, mode: str, request: ModeRequest) -> Prepared:
        s = self.settings
        if mode not in MODES:
            raise ApiError(404, f"Unknown mode {mode!r}; the modes are {', '.join(MODES)}.", code="mode_not_found",
                           param="mode")
        if not s.min_participants <= len(request.participants) <= s.max_participants:
            raise ApiError(400, f"A session takes {s.min_participants} to {s.max_participants} participants, "
                                f"not {len(request.participants)}.", code="invalid_value", param="participants")
        if len(request.question) > s.max_question_chars:
            raise ApiError(400, f"The question is longer than {s.max_question_chars} characters.",
                           code="invalid_value", param="question")
        if request.rounds > s.max_rounds:
            raise ApiError(400, f"At most {s.max_rounds} rounds.", code="invalid_value", param="rounds")
        if request.max_tokens > s.max_tokens_per_turn:
            raise ApiError(400, f"At most {s.max_tokens_per_turn} tokens per turn.", code="invalid_value",
                           param="max_tokens")
        ready = set(self.ready_models())
        for model in request.participants:
            if model not in self.catalogue.models and model not in ready:
                raise ApiError(404, f"The model '{model}' does not exist or is not served here.",
                               code="model_not_found", param="participants")
            if model not in ready:
                raise ApiError(503, f"'{model}' has no ready instance right now; try again shortly.",
                               code="no_ready_instance", param="participants", headers={"Retry-After": "5"})
        limits = [self.catalogue.models[m].max_tokens_limit for m in request.participants if m in self.catalogue.models]
        max_tokens = min([request.max_tokens, *limits])
        chairman = request.chairman
        valid_chairs = {f"p{i}" for i in range(1, len(request.participants) + 1)} | {"orchestrator"}
        if chairman not in (None, "", *valid_chairs):
            raise ApiError(400, "'chairman' is a participant id (p1, p2, ...) or \"orchestrator\".",
                           code="invalid_value", param="chairman")
        needs_orchestrator = mode == "discussion" or (mode == "council" and chairman == "orchestrator")
        orchestrator = self._orchestrator(request, ready) if needs_orchestrator else None
        return Prepared(mode, request, max_tokens, orchestrator)

    def _orchestrator(self, request: ModeRequest, ready: set[str]) -> Speaker:
        choice = request.orchestrator or self.settings.orchestrator or request.participants[0]
        if choice == EXTERNAL:
            if self.external is None:
                raise ApiError(400, "No external orchestrator is configured on this gateway.", code="invalid_value",
                               param="orchestrator")
            return Speaker("orchestrator", self.external.model, f"Orchestrator ({self.external.model})", self.external)
        if choice not in ready:
            raise ApiError(503 if choice in self.catalogue.models else 404,
                           f"The orchestrator '{choice}' has no ready instance here.",
                           code="no_ready_instance" if choice in self.catalogue.models else "model_not_found",
                           param="orchestrator")
        return Speaker("orchestrator", choice, f"Orchestrator ({self.display_names.get(choice, choice)})", self.fleet)

    # -- running -----------------------------------------------------------------------

    async def open(self, mode: str, request: ModeRequest, client: str) -> tuple[str, SessionStream]:
        prepared = self.check(mode, request)
        await self.limits.check("session", client)
        release = self.slots.acquire(client)
        participants = make_participants(request.participants, self.display_names)
        orchestrator = prepared.orchestrator
        transcript = Transcript(
            id=new_session_id(), mode=mode, question=request.question,
            settings={"rounds": request.rounds, "max_tokens": prepared.max_tokens, "temperature": request.temperature,
                      "chairman": request.chairman or None},
            participants=[p.view() for p in participants],
            orchestrator=None if orchestrator is None else {"model": orchestrator.model, "name": orchestrator.name,
                                                            "kind": EXTERNAL if orchestrator.client is self.external
                                                            else "fleet"})
        queue: asyncio.Queue = asyncio.Queue()

        async def emit(event: dict[str, Any]) -> None:
            queue.put_nowait(sse_event(event))

        session = Session(transcript, participants, {p.model: self.fleet for p in participants}, orchestrator,
                          Limits(max_tokens=prepared.max_tokens, turn_timeout=self.settings.turn_timeout,
                                 transcript_chars=self.settings.transcript_chars,
                                 orchestrator_max_tokens=self.settings.orchestrator_max_tokens),
                          emit, temperature=request.temperature, request=request)
        return transcript.id, SessionStream(lambda: self._run(session, queue), queue, release)

    async def _run(self, session: Session, queue: asyncio.Queue) -> None:
        transcript = session.transcript
        started = time.monotonic()
        status = "error"
        try:
            await self._save_quietly(transcript)
            await asyncio.wait_for(self.modes[transcript.mode].run(session), self.settings.session_timeout)
            status = "done"
        except asyncio.TimeoutError:
            status = "timeout"
            await session.emit("error", code="session_timeout",
                               message=f"The session reached its time limit of {self.settings.session_timeout:g} s.")
        except asyncio.CancelledError:
            status = "stopped"
            raise
        except Exception as exc:
            log.exception("modes: session %s failed", transcript.id)
            await session.emit("error", code="session_failed", message=f"The session failed ({type(exc).__name__}).")
        finally:
            transcript.status = status
            transcript.finished = time.time()
            if status == "stopped":
                # The client is gone: record what was said (shielded: this task is being
                # cancelled); no one is listening for `done`.
                queue.put_nowait(None)
                saving = asyncio.ensure_future(self._save_quietly(transcript))
                with suppress(asyncio.CancelledError):
                    await asyncio.shield(saving)
        await session.emit("done", status=status, transcript=transcript.id, seconds=round(time.monotonic() - started, 3),
                           url=f"/modes/{transcript.mode}?t={transcript.id}")
        await self._save_quietly(transcript)
        queue.put_nowait(None)

    async def _save_quietly(self, transcript: Transcript) -> None:
        try:
            await self.repository.save(transcript)
        except Exception:
            log.exception("modes: could not record session %s", transcript.id)

    async def aclose(self) -> None:
        if self.external is not None:
            await self.external.aclose()


def external_client(settings: ModesSettings) -> ExternalChat | None:
    url = settings.external_url
    if url is None:
        return None
    token = settings.orchestrator_token.get_secret_value() if settings.orchestrator_token else None
    return ExternalChat(url, settings.orchestrator_model, token, timeout=settings.orchestrator_timeout)
