"""The wire shape of the modes' events, for the OpenAPI document and the tests.

Every event is one Server-Sent Event: ``event: <type>`` and ``data: <JSON object>`` whose
`type` repeats the event's name. Every event but `token` also carries `t`, seconds since the
session started, and is kept in the stored transcript.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):  # names prefixed: the document's schemas share one namespace
    model_config = ConfigDict(extra="forbid")
    t: float | None = Field(None, description="seconds since the session started (all but token)")


class ModeTurnStart(_Event):
    """A model starts speaking. `participant` is p1..pN or "orchestrator"."""
    type: Literal["turn_start"]
    turn: str
    participant: str
    name: str
    model: str
    role: str = Field(description="contribution, answer, revision, ranking, plan, judge or synthesis")
    round: int


class ModeToken(_Event):
    """A piece of the text of a running turn (not sent for the orchestrator's JSON turns)."""
    type: Literal["token"]
    turn: str
    participant: str
    text: str


class ModeTurnEnd(_Event):
    """A turn ended: `done`, or `skipped` (failed or timed out; `error` says why)."""
    type: Literal["turn_end"]
    turn: str
    participant: str
    role: str
    round: int
    status: Literal["done", "skipped"]
    text: str
    seconds: float
    error: str | None = None


class ModeEvaluation(_Event):
    """kind `plan` (domains, weights, order), `judgement` (complete, reason), `early_stop`,
    `convergence` (round, similarity, pairs) or `final` (answers)."""
    model_config = ConfigDict(extra="allow")
    type: Literal["evaluation"]
    kind: Literal["plan", "judgement", "early_stop", "convergence", "final"]


class ModeRanking(_Event):
    """kind `ranker` (one ranker's order, best first, and how it was read) or `aggregate` (table)."""
    model_config = ConfigDict(extra="allow")
    type: Literal["ranking"]
    kind: Literal["ranker", "aggregate"]


class ModeSynthesis(_Event):
    """The final answer (discussion's synthesis, council's chairman)."""
    model_config = ConfigDict(extra="allow")
    type: Literal["synthesis"]
    participant: str
    name: str
    text: str


class ModeError(_Event):
    """A visible note: a participant skipped (`turn_skipped`), or the session's own failure."""
    model_config = ConfigDict(extra="allow")
    type: Literal["error"]
    code: str
    message: str


class ModeDone(_Event):
    """The last event: how the session ended and where its transcript is."""
    type: Literal["done"]
    status: Literal["done", "timeout", "error"]
    transcript: str
    seconds: float
    url: str


ModeEvent = Annotated[Union[ModeTurnStart, ModeToken, ModeTurnEnd, ModeEvaluation, ModeRanking, ModeSynthesis,
                            ModeError, ModeDone],
                      Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModeEvent)


def openapi_stream_response() -> dict[int | str, dict[str, Any]]:
    schema = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    return {200: {"description": "Server-Sent Events (`event: <type>`, `data: <JSON>`), ending with `done`. "
                                 "Types: turn_start, token, turn_end, evaluation, ranking, synthesis, error, done.",
                  "content": {"text/event-stream": {"schema": {k: v for k, v in schema.items() if k != "$defs"}}}}}


def event_schemas() -> dict[str, Any]:
    return EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}").get("$defs", {})
