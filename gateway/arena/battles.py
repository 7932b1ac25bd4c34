"""Blind battles: two models drawn at random, one prompt, answers streamed as "Model A"/"Model B".

The browser must learn nothing about which model is which before it votes. So the gateway
does not forward upstream chunks: it reads each one and writes a new chunk holding only the
fields the UI needs (content, role, finish reason, token usage), under a battle-specific id
and the model name "Model A" or "Model B". Fields such as `model`, `id`, `system_fingerprint`
and anything a server may add later never reach the browser. Error messages are scrubbed of
model names too. Answers and timings are measured here, on the real stream, and kept with
the battle for the vote.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from gateway.arena.votes import SIDES, Battle, SideResult, VoteStore
from gateway.store import DatabaseUnavailable
from shared.errors import ApiError
from shared.sse import DONE, DONE_PAYLOAD, SseReader
from shared.sse import encode as _sse

log = logging.getLogger(__name__)

SIDE_LABELS = {"a": "Model A", "b": "Model B"}
StreamChat = Callable[[dict[str, Any]], AsyncIterator[bytes]]


class BattleRequest(BaseModel):
    """What the browser sends to start a battle: one prompt and the sampling settings."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000)
    system: str = Field("", max_length=8_000)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(256, ge=1, le=4096)


def pick_pair(ready: Sequence[str], weights: Mapping[str, float], rng: random.Random) -> tuple[str, str]:
    """Two different models, each drawn with probability proportional to its battle weight.

    A model missing from `weights` counts 1.0; a weight of 0 keeps a model out of battles.
    The order is random too: the first drawn is Model A.
    """
    pool = sorted({m for m in ready if weights.get(m, 1.0) > 0})
    if len(pool) < 2:
        raise ApiError(503, "A battle needs two models with a ready instance; "
                            f"{len(pool)} {'is' if len(pool) == 1 else 'are'} ready now. Try again shortly.",
                       code="not_enough_models")
    first = rng.choices(pool, weights=[weights.get(m, 1.0) for m in pool])[0]
    rest = [m for m in pool if m != first]
    second = rng.choices(rest, weights=[weights.get(m, 1.0) for m in rest])[0]
    return first, second


class NameScrubber:
    """Replaces every known model name in a text with the side's label."""

    def __init__(self, names: Iterable[str]) -> None:
        unique = sorted({n for n in names if n and n.strip()}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(n) for n in unique), re.IGNORECASE) if unique else None

    def __call__(self, text: str, label: str) -> str:
        return self._pattern.sub(label, text) if self._pattern else text


@dataclass
class _Meter:
    """Timings of one answer, from the moment the request was sent upstream."""

    started: float
    first_token: float | None = None
    finished: float | None = None
    chunks_with_text: int = 0
    usage_tokens: int | None = None

    def result(self, status: str, answer: str, finish_reason: str | None, error: str | None) -> SideResult:
        end = self.finished or time.monotonic()
        tokens = self.usage_tokens if self.usage_tokens is not None else self.chunks_with_text
        ttft = None if self.first_token is None else self.first_token - self.started
        tps = None
        if self.first_token is not None and tokens > 1 and end > self.first_token:
            # The decode rate: tokens after the first over the time after the first.
            tps = (tokens - 1) / (end - self.first_token)
        return SideResult(status=status, answer=answer, ttft=ttft, total=end - self.started, tokens=tokens,
                          tokens_per_second=tps, finish_reason=finish_reason, error=error)


async def _shielded(write: Awaitable[None]) -> None:
    """Finish a store write even if the task awaiting it is cancelled (the browser went away)."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class BattleManager:
    """Creates battles, streams their sides anonymously, and records the votes."""

    def __init__(self, store: VoteStore, *, weights: Mapping[str, float] | None = None,
                 known_names: Iterable[str] = (), rng: random.Random | None = None) -> None:
        self.store = store
        self.weights = dict(weights or {})
        self.known_names = set(known_names)
        self.rng = rng or random.SystemRandom()

    async def create(self, ready: Sequence[str], request: BattleRequest,
               max_tokens_limits: Mapping[str, int] | None = None) -> Battle:
        model_a, model_b = pick_pair(ready, self.weights, self.rng)
        limits = max_tokens_limits or {}
        # Both sides get the same settings, so the tighter of the two limits applies to both.
        max_tokens = min(request.max_tokens, limits.get(model_a, request.max_tokens),
                         limits.get(model_b, request.max_tokens))
        settings = {**request.model_dump(), "max_tokens": max_tokens}
        return await self.store.create_battle(secrets.token_urlsafe(16), model_a, model_b,
                                        self.rng.randrange(2**31), settings)

    @staticmethod
    def upstream_body(battle: Battle, side: str) -> dict[str, Any]:
        req = battle.request
        messages = ([{"role": "system", "content": req["system"]}] if req.get("system") else [])
        messages.append({"role": "user", "content": req["prompt"]})
        return {"model": battle.model(side), "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": req["temperature"],
                "max_tokens": req["max_tokens"], "seed": battle.seed}

    def scrubber(self, battle: Battle) -> NameScrubber:
        return NameScrubber({*self.known_names, battle.model_a, battle.model_b})

    async def open_side(self, battle_id: str, side: str, stream_chat: StreamChat) -> AsyncIterator[bytes]:
        """Claim a side and start its upstream stream; errors before the first byte raise here.

        Returns the anonymised SSE stream to send to the browser. The side is recorded when the
        stream ends, fails, or is cancelled (the browser's stop button closes the connection,
        which closes this generator, which closes the upstream request).
        """
        if side not in SIDES:
            raise ApiError(404, f"A battle has sides 'a' and 'b', not {side!r}.", code="side_not_found",
                           param="side")
        battle = await self.store.get_battle(battle_id)
        await self.store.claim_side(battle_id, side)
        label = SIDE_LABELS[side]
        scrub = self.scrubber(battle)
        meter = _Meter(started=time.monotonic())
        upstream = stream_chat(self.upstream_body(battle, side))
        try:
            first = await upstream.__anext__()
        except StopAsyncIteration:
            first = b""
        except ApiError as exc:
            await upstream.aclose()
            message = scrub(exc.message, label)
            await self.store.finish_side(battle_id, side, meter.result("error", "", None, message))
            raise ApiError(exc.status, f"{label} is unavailable: {message}", code=exc.code, type=exc.type) from None
        except BaseException:
            await upstream.aclose()
            await _shielded(self.store.finish_side(battle_id, side,
                                                   meter.result("error", "", None, "the upstream request failed")))
            raise
        return self._relay(battle, side, first, upstream, meter, scrub)

    async def _relay(self, battle: Battle, side: str, first: bytes, upstream: AsyncIterator[bytes],
                     meter: _Meter, scrub: NameScrubber) -> AsyncIterator[bytes]:
        label = SIDE_LABELS[side]
        chunk_id = f"chatcmpl-battle-{battle.id}-{side}"
        created = int(battle.created_at)
        reader = SseReader()
        answer: list[str] = []
        status, finish_reason, error = "stopped", None, None
        recorded = False

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> bytes:
            body: dict[str, Any] = {"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                                    "model": label, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                body["usage"] = usage
                if not delta and finish is None:
                    body["choices"] = []
            return _sse(body)

        try:
            pending = [first]
            done = False
            while not done:
                if not pending:
                    try:
                        pending.append(await upstream.__anext__())
                    except StopAsyncIteration:
                        break
                for payload in reader.feed(pending.pop()):
                    if payload.strip() == DONE_PAYLOAD:
                        done = True
                        break
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        continue
                    if not isinstance(event, dict):
                        continue
                    if "error" in event:
                        err = event["error"] if isinstance(event["error"], dict) else {"message": str(event["error"])}
                        error = scrub(str(err.get("message") or "the model failed"), label)
                        status = "error"
                        yield _sse({"error": {"message": f"{label} failed: {error}",
                                              "type": str(err.get("type") or "upstream_error"),
                                              "param": None, "code": err.get("code")
                                              if isinstance(err.get("code"), (str, type(None))) else None}})
                        done = True
                        break
                    usage = event.get("usage") if isinstance(event.get("usage"), dict) else None
                    safe_usage = None
                    if usage:
                        safe_usage = {k: int(usage[k]) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                                      if isinstance(usage.get(k), (int, float))}
                        if "completion_tokens" in safe_usage:
                            meter.usage_tokens = safe_usage["completion_tokens"]
                    for choice in event.get("choices") or []:
                        if not isinstance(choice, dict):
                            continue
                        delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                        out: dict[str, Any] = {}
                        if delta.get("role") == "assistant":
                            out["role"] = "assistant"
                        content = delta.get("content")
                        if isinstance(content, str) and content:
                            if meter.first_token is None:
                                meter.first_token = time.monotonic()
                            meter.chunks_with_text += 1
                            answer.append(content)
                            out["content"] = content
                        fr = choice.get("finish_reason")
                        if isinstance(fr, str):
                            finish_reason = fr
                        if out or isinstance(fr, str):
                            yield chunk(out, fr if isinstance(fr, str) else None)
                    if safe_usage:
                        yield chunk({}, None, safe_usage)
            if status != "error":
                status = "done" if done or finish_reason else "error"
                if status == "error":
                    error = "the stream ended before the answer was complete"
                    yield _sse({"error": {"message": f"{label} failed: {error}", "type": "upstream_error",
                                          "param": None, "code": "stream_incomplete"}})
            meter.finished = time.monotonic()
            result = meter.result(status, "".join(answer), finish_reason, error)
            recorded = True  # the write completes even if this task is cancelled now
            try:
                await _shielded(self.store.finish_side(battle.id, side, result))
            except DatabaseUnavailable as exc:  # the answer reached the user: end the stream normally
                log.warning("battle %s side %s not recorded: %s", battle.id, side, exc)
            yield _sse({"object": "arena.side.stats", "side": side, "status": result.status, "ttft": result.ttft,
                        "total": result.total, "tokens": result.tokens,
                        "tokens_per_second": result.tokens_per_second})
            yield DONE
        finally:
            await upstream.aclose()
            if not recorded:
                # Cancelled (the browser stopped it or went away) or failed mid-stream: keep what
                # was said, so the battle can still be voted on.
                meter.finished = time.monotonic()
                try:
                    await _shielded(self.store.finish_side(
                        battle.id, side, meter.result(status if status == "error" else "stopped", "".join(answer),
                                                      finish_reason, error)))
                except Exception:
                    log.exception("could not record the end of battle %s side %s", battle.id, side)

    def reveal(self, battle: Battle, display_names: Mapping[str, str]) -> dict[str, dict[str, str]]:
        return {s: {"model": battle.model(s), "display_name": display_names.get(battle.model(s), battle.model(s))}
                for s in SIDES}
