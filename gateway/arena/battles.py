"""Blind battles: two models drawn at random, one prompt, answers streamed as "Model A"/"Model B".

The browser must learn nothing about which model is which before it votes. So the gateway
does not forward upstream chunks: it reads each one and writes a new chunk holding only the
answer's text, role and finish reason, under a battle-specific id and the label "Model A" or
"Model B". Nothing that depends on a model's tokenizer reaches the browser before the vote:
no usage counts (a script that asks a model directly for the prompt's token count could match
it), and not even the token boundaries: the text is re-cut at whitespace
(`WordChunker`), so a side's chunks are words, whatever the tokenizer. Timings, token counts,
the seed and the models are measured and kept with the battle, and revealed with the vote.
Error messages are scrubbed of model names too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Literal, Mapping, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gateway.arena.activity import BattleActivity
from gateway.arena.categories import categorize
from gateway.arena.votes import SIDES, Battle, SideResult, Vote, VoteStore, is_contest
from gateway.store import DatabaseUnavailable
from shared.catalogue import ArenaPolicy
from shared.errors import ApiError
from shared.sse import DONE, DONE_PAYLOAD, SseReader
from shared.sse import encode as _sse

log = logging.getLogger(__name__)
T = TypeVar("T")

SIDE_LABELS = {"a": "Model A", "b": "Model B"}
# stream_chat(body, info): `info` receives the instance's id once one answers.
StreamChat = Callable[[dict[str, Any], dict[str, Any]], AsyncIterator[bytes]]
# serving(model, instance_id): is that instance (or, with None, any instance of the model) in service?
ServingCheck = Callable[[str, "str | None"], bool]


class SideHung(Exception):
    """A side's model stopped answering: its instance left service, or the answer deadline passed."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class SideWatch:
    """One watchdog per side while the gateway streams it. The side fails as soon as the health
    monitor takes its instance out of service (before an instance answered: every instance of
    its model), or when `deadline` seconds pass without a chunk (the first or the next: any
    event counts, a reasoning model's hidden thinking too). The watchdog checks every `TICK`
    and, when the side hangs, cancels the task waiting in `next` (which then raises `SideHung`);
    the relay itself awaits the upstream directly, with no task per chunk. Every `beat_every`
    seconds it also awaits `heartbeat` (the store's "this side is alive"), in a task of its own so
    a slow store never delays the checks; `close` lets a beat in flight finish (cancelling a
    database driver mid-query can spoil its pooled connection), each bounded by `beat_timeout`."""

    TICK = 0.25

    def __init__(self, deadline: float, still_serving: Callable[[], bool], *,
                 heartbeat: Callable[[], Awaitable[None]] | None = None, beat_every: float = 30.0,
                 beat_timeout: float | None = None) -> None:
        self.deadline = deadline
        self.still_serving = still_serving
        self.heartbeat, self.beat_every = heartbeat, beat_every
        self.beat_timeout = beat_every if beat_timeout is None else beat_timeout
        self.last = time.monotonic()
        self._waiter: asyncio.Task | None = None
        self._hung: SideHung | None = None
        self._task: asyncio.Task | None = None  # the watchdog
        self._beats: set[asyncio.Task] = set()  # heartbeat writes, never cancelled

    def hung(self) -> SideHung | None:
        if not self.still_serving():
            return SideHung("stopped responding: the gateway took its instance out of service (its health checks "
                            "failed)", "instance_unhealthy", 503)
        waited = time.monotonic() - self.last
        if waited >= self.deadline:
            return SideHung(f"gave no answer for {waited:.0f} s (the arena's answer deadline is {self.deadline:g} s)",
                            "answer_deadline", 504)
        return None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def close(self) -> None:
        """Stop watching (synchronous: called from the relay's clean-up, which may be cancelled).
        A heartbeat write in flight is left to finish (within `beat_timeout`)."""
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        beat_at = time.monotonic() + self.beat_every
        beating: asyncio.Task | None = None
        while True:
            await asyncio.sleep(self.TICK)
            try:  # one failing check must not end the watch (the side would never fail, nor beat)
                if self._waiter is not None and self._hung is None and (hung := self.hung()) is not None:
                    self._hung = hung
                    self._waiter.cancel()
                if self.heartbeat is not None and time.monotonic() >= beat_at and (beating is None or beating.done()):
                    beat_at = time.monotonic() + self.beat_every
                    beating = asyncio.ensure_future(self._beat())
                    self._beats.add(beating)  # held, so it is not collected before it ends
                    beating.add_done_callback(self._beats.discard)
            except Exception:
                log.exception("a battle side's watchdog check failed (it goes on)")

    async def _beat(self) -> None:
        try:
            await asyncio.wait_for(self.heartbeat(), self.beat_timeout)
        except Exception as exc:  # the store is down or slow: the side goes on; it may be recovered as stale
            log.warning("could not mark a battle side alive: %s", exc)

    async def next(self, upstream: AsyncIterator[bytes]) -> bytes:
        """The upstream's next chunk; `SideHung` if it hangs, `StopAsyncIteration` at its end."""
        if self._hung is not None:
            raise self._hung
        waiter = self._waiter = asyncio.current_task()
        try:
            chunk = await upstream.__anext__()
        except asyncio.CancelledError:
            if self._hung is None:
                raise
            uncancel = getattr(waiter, "uncancel", None)  # Python 3.11+: was it cancelled by another too?
            if uncancel is not None and uncancel() > 0:
                raise
            raise self._hung from None
        finally:
            self._waiter = None
        self.last = time.monotonic()
        return chunk


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


class WordChunker:
    """Re-cuts streamed text into words: each piece is one word with the whitespace after it, so
    the pieces depend on the text alone and the browser cannot see where one token ended and
    the next began. A run without whitespace (Chinese, Japanese, a long URL) is cut every
    `HOLD` characters, again positions that depend on the text alone."""

    HOLD = 32
    _PIECE = re.compile(r"\S{1,%d}\s*|\s+" % HOLD)

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        """The pieces now complete: a piece is complete once the next one has begun, so the cut
        is where it would be in the whole text, whatever arrived when."""
        self._pending += text
        pieces = self._PIECE.findall(self._pending)[:-1]
        self._pending = self._pending[sum(len(p) for p in pieces):]
        return pieces

    def flush(self) -> str:
        out, self._pending = self._pending, ""
        return out


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


async def _shielded(write: Awaitable[T]) -> T:
    """Finish a store write even if the task awaiting it is cancelled (the browser went away)."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class RegenerateRequest(BaseModel):
    """Which sides of a voted battle to ask again."""

    model_config = ConfigDict(extra="forbid")

    sides: list[Literal["a", "b"]] = Field(min_length=1, max_length=2)


class FollowUpRequest(BaseModel):
    """A follow-up question in a battle: both sides answer it, each in its own conversation."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=20_000)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class BattleManager:
    """Creates battles, streams their sides anonymously, takes follow-ups, and records the votes.

    Only the client that opened a battle can stream it, follow up and vote: creation returns a
    random token (kept by the page), the store keeps its hash, and every later call must
    present it (`X-Battle-Token`)."""

    def __init__(self, store: VoteStore, *, weights: Mapping[str, float] | None = None,
                 known_names: Iterable[str] = (), rng: random.Random | None = None,
                 activity: BattleActivity | None = None, policy: ArenaPolicy | None = None,
                 serving: ServingCheck | None = None) -> None:
        self.store = store
        self.serving = serving or (lambda model, instance_id: True)
        self.policy = policy or ArenaPolicy()
        self.activity = activity or BattleActivity()
        self.weights = dict(weights or {})
        self.known_names = set(known_names)
        self.rng = rng or random.SystemRandom()

    def _check_size(self, text: str, limit: int, what: str, param: str) -> None:
        if len(text) > limit:
            raise ApiError(400, f"The {what} has {len(text)} characters; the arena takes at most {limit}.",
                           code="prompt_too_long", param=param)

    async def create(self, ready: Sequence[str], request: BattleRequest,
                     max_tokens_limits: Mapping[str, int] | None = None, *,
                     client: str | None = None, avoid: frozenset[str] | None = None) -> tuple[Battle, str]:
        """A new battle between two ready models, and the token that proves who opened it.
        `avoid` (a pair already played) is drawn again, a few times, when other pairs exist."""
        self._check_size(request.prompt, self.policy.max_prompt_chars, "prompt", "prompt")
        self._check_size(request.system, self.policy.max_system_chars, "system prompt", "system")
        model_a, model_b = pick_pair(ready, self.weights, self.rng)
        for _ in range(8 if avoid else 0):
            if {model_a, model_b} != avoid:
                break
            model_a, model_b = pick_pair(ready, self.weights, self.rng)
        limits = max_tokens_limits or {}
        # Both sides get the same settings, so the tighter of the two limits applies to both.
        max_tokens = min(request.max_tokens, limits.get(model_a, request.max_tokens),
                         limits.get(model_b, request.max_tokens))
        settings = {**request.model_dump(), "max_tokens": max_tokens, "requested_max_tokens": request.max_tokens}
        token = secrets.token_urlsafe(24)
        battle = await self.store.create_battle(secrets.token_urlsafe(16), model_a, model_b,
                                                self.rng.randrange(2**31), settings,
                                                token_hash=token_hash(token), client=client)
        return battle, token

    @staticmethod
    def check_token(battle: Battle, token: str | None) -> None:
        """Refuse anyone but the client that opened `battle`."""
        if battle.token_hash is None:
            return  # a battle from before tokens existed
        if not token or not hmac.compare_digest(battle.token_hash, token_hash(token)):
            raise ApiError(403, "This battle belongs to the client that opened it: the battle token is missing "
                                "or wrong (header X-Battle-Token).", code="invalid_battle_token")

    async def follow_up(self, battle_id: str, token: str | None, prompt: str) -> Battle:
        """Add a user turn: both sides will answer it in their own conversation."""
        battle = await self.get(battle_id)
        self.check_token(battle, token)
        self._check_size(prompt, self.policy.max_prompt_chars, "prompt", "prompt")
        if battle.turn >= self.policy.max_turns:
            raise ApiError(409, f"A battle has at most {self.policy.max_turns} turns: vote, then start a new one.",
                           code="too_many_turns")
        so_far = sum(len(p) for p in battle.prompts) + sum(len(r.answer) for t in battle.all_turns()
                                                           for r in t.sides.values())
        if so_far + len(prompt) > self.policy.max_conversation_chars:
            raise ApiError(400, f"The battle's conversation would pass {self.policy.max_conversation_chars} "
                                "characters: vote, then start a new one.", code="conversation_too_long",
                           param="prompt")
        return await self.store.add_turn(battle_id, prompt)

    async def new_round(self, battle_id: str, token: str | None, ready: Sequence[str],
                        max_tokens_limits: Mapping[str, int] | None = None, *,
                        client: str | None = None) -> tuple[Battle, str]:
        """The battle's first prompt and settings again, to a new pair (another pair than this
        one when the fleet has one). Only after this battle is settled: voted, or no contest."""
        battle = await self.get(battle_id)
        self.check_token(battle, token)
        settled = battle.vote is not None or (battle.finished and not all(
            is_contest(battle.sides[s]) for s in SIDES))
        if not settled:
            raise ApiError(409, "Vote on this battle first (or abandon it): a new round starts once it is settled.",
                           code="battle_not_voted")
        req = battle.request
        request = BattleRequest(prompt=battle.prompts[0], system=req.get("system", ""),
                                temperature=req.get("temperature", 0.7),
                                max_tokens=req.get("requested_max_tokens", req["max_tokens"]))
        return await self.create(ready, request, max_tokens_limits, client=client,
                                 avoid=frozenset((battle.model_a, battle.model_b)))

    async def get(self, battle_id: str) -> Battle:
        """The battle, after ending the sides a dead gateway left streaming (`recover_stale_sides`):
        a streaming side's gateway holds a lease of its own answer deadline, renewed every third
        of it, on the store's clock; a side whose lease ran out has no gateway left. The reader's
        own deadline and clock play no part. If that write fails (the store is read-only or
        unavailable, SQLite busy) the battle is returned as read."""
        battle = await self.store.get_battle(battle_id)
        if any(r.status == "streaming" for r in battle.sides.values()):
            try:
                recovered = await self.store.recover_stale_sides(battle_id)
            except Exception as exc:
                log.warning("could not end the stale sides of battle %s: %s", battle_id, exc)
            else:
                if recovered:
                    battle = await self.store.get_battle(battle_id)
        return battle

    async def regenerate(self, battle_id: str, token: str | None, sides: Sequence[str]) -> Battle:
        """Ask sides of a voted battle again (see the README: the vote stays on what was shown)."""
        battle = await self.get(battle_id)
        self.check_token(battle, token)
        return await self.store.regenerate(battle_id, tuple(dict.fromkeys(sides)),
                                           limit=self.policy.max_regenerations, seed=battle.seed)

    async def vote(self, battle_id: str, token: str | None, winner: str, client: str | None) -> tuple[Vote, Battle]:
        battle = await self.get(battle_id)
        self.check_token(battle, token)
        vote = await self.store.record_vote(battle_id, winner, client=client, categorize=categorize)
        return vote, await self.store.get_battle(battle_id)

    @staticmethod
    def upstream_body(battle: Battle, side: str) -> dict[str, Any]:
        """The side's own conversation: every earlier prompt with this side's answer, then the new prompt."""
        req = battle.request
        messages = ([{"role": "system", "content": req["system"]}] if req.get("system") else [])
        for turn in battle.earlier:
            messages += [{"role": "user", "content": turn.prompt},
                         {"role": "assistant", "content": turn.sides[side].answer}]
        messages.append({"role": "user", "content": battle.prompts[-1]})
        seed = (req.get("side_seeds") or {}).get(side, battle.seed)  # a regenerated side draws anew
        return {"model": battle.model(side), "messages": messages, "stream": True,
                "stream_options": {"include_usage": True}, "temperature": req["temperature"],
                "max_tokens": req["max_tokens"], "seed": seed}

    def scrubber(self, battle: Battle) -> NameScrubber:
        return NameScrubber({*self.known_names, battle.model_a, battle.model_b})

    async def open_side(self, battle_id: str, side: str, stream_chat: StreamChat,
                        token: str | None = None) -> AsyncIterator[bytes]:
        """Claim a side and start its upstream stream; errors before the first byte raise here.

        Returns the anonymised SSE stream to send to the browser. The side is recorded when the
        stream ends, fails, or is cancelled (the browser's stop button closes the connection,
        which closes this generator, which closes the upstream request).
        """
        if side not in SIDES:
            raise ApiError(404, f"A battle has sides 'a' and 'b', not {side!r}.", code="side_not_found",
                           param="side")
        battle = await self.get(battle_id)
        self.check_token(battle, token)
        body = self.upstream_body(battle, side)  # before the claim: a failure here leaves the side pending
        lease = self.policy.answer_deadline
        await self.store.claim_side(battle_id, side, lease=lease)
        label = SIDE_LABELS[side]
        scrub = self.scrubber(battle)
        meter = _Meter(started=time.monotonic())
        live = ExitStack()  # the side counts as streaming until its relay ends
        live.enter_context(self.activity.side_streaming())
        info: dict[str, Any] = {}
        model = battle.model(side)
        watch = SideWatch(self.policy.answer_deadline, lambda: self.serving(model, info.get("instance_id")),
                          heartbeat=lambda: self.store.touch_side(battle_id, side, lease=lease),
                          beat_every=lease / 3)
        live.callback(watch.close)
        upstream = stream_chat(body, info)
        try:
            watch.start()
            first = await watch.next(upstream)
        except StopAsyncIteration:
            first = b""
        except SideHung as exc:
            live.close()
            await upstream.aclose()
            await _shielded(self.store.finish_side(battle_id, side, meter.result("error", "", None, exc.message)))
            raise ApiError(exc.status, f"{label} {exc.message}.", code=exc.code) from None
        except ApiError as exc:
            live.close()
            await upstream.aclose()
            message = scrub(exc.message, label)
            await self.store.finish_side(battle_id, side, meter.result("error", "", None, message))
            # The model's own refusal (a prompt over its context, say) is said as such, not as an outage.
            said = "could not answer" if exc.status < 500 else "is unavailable"
            raise ApiError(exc.status, f"{label} {said}: {message}", code=exc.code, type=exc.type) from None
        except BaseException:
            live.close()
            await upstream.aclose()
            await _shielded(self.store.finish_side(battle_id, side,
                                                   meter.result("error", "", None, "the upstream request failed")))
            raise
        relay = self._relay(battle, side, first, upstream, meter, scrub, live, watch)
        # Run the relay to its first line: closing it then records the side and closes the
        # upstream request even if not one chunk was read (the browser left before the first token).
        await relay.__anext__()
        return relay

    async def _relay(self, battle: Battle, side: str, first: bytes, upstream: AsyncIterator[bytes],
                     meter: _Meter, scrub: NameScrubber, live: ExitStack, watch: SideWatch) -> AsyncIterator[bytes]:
        label = SIDE_LABELS[side]
        chunk_id = f"chatcmpl-battle-{battle.id}-{battle.turn}-{side}"
        created = int(battle.created_at)
        reader = SseReader()
        answer: list[str] = []
        status, finish_reason, error = "stopped", None, None
        recorded = False

        words = WordChunker()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": label,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        try:
            yield b""  # taken by open_side, never sent
            pending = [first]
            done = False
            while not done:
                if not pending:
                    try:
                        pending.append(await watch.next(upstream))
                    except StopAsyncIteration:
                        break
                    except SideHung as exc:
                        # Ended here, as an error: a hung side is not an answer to vote on.
                        status, error = "error", exc.message
                        if rest := words.flush():
                            yield chunk({"content": rest})
                        yield _sse({"error": {"message": f"{label} {exc.message}.", "type": "upstream_error",
                                              "param": None, "code": exc.code}})
                        break
                for payload in reader.feed(pending.pop()):
                    if payload.strip() == DONE_PAYLOAD:
                        done = True
                        break
                    try:
                        event = json.loads(payload)
                    except (ValueError, RecursionError):  # garbage, or nested past the parser's limit
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
                    usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
                    if isinstance(usage.get("completion_tokens"), (int, float)):
                        meter.usage_tokens = int(usage["completion_tokens"])  # kept, shown after the vote
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
                            for piece in words.feed(content):
                                yield chunk({**out, "content": piece})
                                out = {}
                        fr = choice.get("finish_reason")
                        if isinstance(fr, str):
                            finish_reason = fr
                            if rest := words.flush():
                                out["content"] = rest
                        if out or isinstance(fr, str):
                            yield chunk(out, fr if isinstance(fr, str) else None)
            if rest := words.flush():
                yield chunk({"content": rest})
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
                kept = await _shielded(self.store.finish_side(battle.id, side, result))
            except DatabaseUnavailable as exc:  # the answer reached the user: end the stream normally
                log.warning("battle %s side %s not recorded: %s", battle.id, side, exc)
                kept = True
            if not kept:
                # Another gateway ended this side as stale meanwhile (its lease ran out while this
                # one could not renew it): what readers see is not this answer, so it is not "done".
                log.warning("battle %s side %s was ended as stale while it streamed", battle.id, side)
                yield _sse({"error": {"message": f"{label}'s answer was not kept: the arena ended it meanwhile "
                                                 "(its gateway could not renew its hold on it). Reload the battle.",
                                      "type": "upstream_error", "param": None, "code": "side_recovered"}})
                yield DONE
                return
            # Only the outcome: timings and token counts tell models apart, they come with the vote.
            yield _sse({"object": "arena.side.done", "side": side, "status": result.status,
                        "finish_reason": result.finish_reason})
            yield DONE
        finally:
            live.close()
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

    def reveal(self, battle: Battle, display_names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """Everything about each side, for after the vote: who it was and how fast it answered."""
        out = {}
        for s in SIDES:
            r = battle.sides.get(s, SideResult())
            out[s] = {"model": battle.model(s), "display_name": display_names.get(battle.model(s), battle.model(s)),
                      "ttft": r.ttft, "total": r.total, "tokens": r.tokens,
                      "tokens_per_second": r.tokens_per_second}
        return out
