"""What every mode shares: the request, the participants, the events, and one turn.

A mode is a plain class with `async run(session)`. It speaks through the `Session`: `turn()`
streams one model's answer as `turn_start`, `token`..., `turn_end` events and returns its
text, or None when the model failed or timed out (then the turn ends `skipped` with the reason,
and an `error` event says so: the mode goes on without it). `parallel()` runs turns at once.
Every event except `token` is also kept in the transcript, so a stored session can be replayed.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Awaitable, Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from gateway.modes.chat import ChatClient, ChatFailed, ChatRequest

log = logging.getLogger("gateway.modes")

MODES = ("discussion", "council", "roundtable")
EVENT_TYPES = ("turn_start", "token", "turn_end", "evaluation", "ranking", "synthesis", "error", "done")
Emit = Callable[[dict[str, Any]], Awaitable[None]]
MAX_CHARS_PER_TOKEN = 32
MODEL_ID_MAX = 128  # a model key (or "external"): longer is no model, and is never echoed back
ModelId = Annotated[str, StringConstraints(max_length=MODEL_ID_MAX)]


class ModeRequest(BaseModel):
    """What the browser sends to start a session. Bounds beyond these come from `ModesSettings`."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=100_000)
    participants: list[ModelId] = Field(min_length=2, max_length=6,
                                    description="model keys, 2 to 6; a model may take part more than once")
    rounds: int = Field(2, ge=1, le=10, description="discussion rounds, or roundtable revisions")
    max_tokens: int = Field(192, ge=1, le=4096, description="tokens per turn")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    orchestrator: ModelId | None = Field(None, description="a model key or \"external\"; default: the gateway's")
    chairman: str | None = Field(None, max_length=16, description="council: a participant id (p1, p2, ...), \"orchestrator\", "
                                                   "or empty for the best-ranked participant")


@dataclass(frozen=True)
class Participant:
    id: str          # p1, p2, ... in the order the request named them
    model: str
    name: str        # display name, "#2" etc. when a model takes part more than once

    def view(self) -> dict[str, str]:
        return {"id": self.id, "model": self.model, "name": self.name}


def make_participants(models: Sequence[str], display_names: dict[str, str]) -> list[Participant]:
    counts: dict[str, int] = {}
    out = []
    for index, model in enumerate(models, start=1):
        counts[model] = counts.get(model, 0) + 1
        name = display_names.get(model, model)
        out.append(Participant(f"p{index}", model, name))
    seen: dict[str, int] = {}
    for i, p in enumerate(out):
        if counts[p.model] > 1:
            seen[p.model] = seen.get(p.model, 0) + 1
            out[i] = Participant(p.id, p.model, f"{p.name} #{seen[p.model]}")
    return out


@dataclass(frozen=True)
class Speaker:
    """Who speaks in a turn: a participant, or the orchestrator/chairman (id "orchestrator")."""

    id: str
    model: str
    name: str
    client: ChatClient


@dataclass
class Limits:
    max_tokens: int
    turn_timeout: float
    transcript_chars: int
    orchestrator_max_tokens: int


@dataclass
class Transcript:
    id: str
    mode: str
    question: str
    settings: dict[str, Any]
    participants: list[dict[str, str]]
    orchestrator: dict[str, str] | None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    status: str = "running"
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "object": "arena.modes.transcript", "mode": self.mode, "question": self.question,
                "settings": self.settings, "participants": self.participants, "orchestrator": self.orchestrator,
                "created": self.created, "finished": self.finished, "status": self.status, "events": self.events}


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


class Session:
    """One running session: its participants, clients, limits, and the events it emits."""

    def __init__(self, transcript: Transcript, participants: list[Participant], clients: dict[str, ChatClient],
                 orchestrator: Speaker | None, limits: Limits, emit: Emit, *, temperature: float,
                 request: ModeRequest) -> None:
        self.transcript = transcript
        self.participants = participants
        self.clients = clients
        self.orchestrator = orchestrator
        self.limits = limits
        self.temperature = temperature
        self.request = request
        self._emit = emit
        self._turns = 0

    @property
    def question(self) -> str:
        return self.transcript.question

    def speaker(self, participant: Participant) -> Speaker:
        return Speaker(participant.id, participant.model, participant.name, self.clients[participant.model])

    async def emit(self, type_: str, **data: Any) -> None:
        event = {"type": type_, **data}
        if type_ != "token":
            event["t"] = builtins.round(time.time() - self.transcript.created, 3)
            self.transcript.events.append(event)
        await self._emit(event)

    async def turn(self, speaker: Speaker, messages: list[dict[str, str]], *, role: str, round: int,
                   max_tokens: int | None = None, response_format: dict[str, Any] | None = None,
                   stream_tokens: bool = True) -> str | None:
        """One model's answer, streamed as events; None if it failed or timed out (skipped)."""
        self._turns += 1
        turn_id = f"t{self._turns}"
        started = time.monotonic()
        await self.emit("turn_start", turn=turn_id, participant=speaker.id, name=speaker.name, model=speaker.model,
                        role=role, round=round)
        pieces: list[str] = []

        async def on_piece(piece: str) -> None:
            pieces.append(piece)
            if stream_tokens:
                await self.emit("token", turn=turn_id, participant=speaker.id, text=piece)

        request = ChatRequest(model=speaker.model, messages=messages, max_tokens=max_tokens or self.limits.max_tokens,
                              temperature=self.temperature, response_format=response_format)
        error: str | None = None
        # A hostile endpoint may ignore max_tokens: the text is cut at a generous multiple of it.
        cap = request.max_tokens * MAX_CHARS_PER_TOKEN

        async def consume() -> None:
            stream = speaker.client.stream(request)
            size = 0
            try:
                async for piece in stream:
                    piece = piece[:cap - size]
                    size += len(piece)
                    await on_piece(piece)
                    if size >= cap:
                        break
            finally:
                await stream.aclose()

        try:
            await asyncio.wait_for(consume(), self.limits.turn_timeout)
        except asyncio.TimeoutError:
            error = f"timed out after {self.limits.turn_timeout:g} s"
        except ChatFailed as exc:
            error = str(exc) or "the model failed"
        except Exception as exc:  # a hostile or broken instance must not end the session
            log.warning("modes: turn %s of %s failed: %r", turn_id, speaker.model, exc)
            error = f"the model failed ({type(exc).__name__})"
        text = "".join(pieces)
        seconds = builtins.round(time.monotonic() - started, 3)
        if error is None and not text.strip():
            error = "the model returned nothing"
        if error is not None:
            await self.emit("error", turn=turn_id, participant=speaker.id, name=speaker.name, code="turn_skipped",
                            message=f"{speaker.name} was skipped: {error}")
            await self.emit("turn_end", turn=turn_id, participant=speaker.id, role=role, round=round,
                            status="skipped", text=text, error=error, seconds=seconds)
            return None
        await self.emit("turn_end", turn=turn_id, participant=speaker.id, role=role, round=round, status="done",
                        text=text, seconds=seconds)
        return text

    async def parallel(self, calls: Sequence[Awaitable[Any]]) -> list[Any]:
        """Run turns at once; if the session is cancelled, gather cancels every one of them."""
        return list(await asyncio.gather(*calls))

    def clip(self, text: str, chars: int | None = None) -> str:
        """Keep prompts inside small models' contexts: the end of a long text is dropped."""
        chars = chars or self.limits.transcript_chars
        return text if len(text) <= chars else text[:chars].rstrip() + " …"


Mode = Literal["discussion", "council", "roundtable"]
