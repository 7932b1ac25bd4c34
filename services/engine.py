"""Continuous batching: one scheduler thread owns the llama context and decodes every active
request together.

Each step builds one `llama_batch` holding the next token of every generating sequence plus a
chunk of pending prompt tokens, calls `llama_decode` once, then samples each sequence with its
own sampler chain. New requests join between steps; finished or cancelled ones leave between
steps. The asyncio side only submits `GenerationJob`s and reads their events, so the event loop
never waits on inference.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from shared.core_board import FixedThreads, ThreadPolicy
from shared.errors import DomainError
from services.exceptions import (Draining, GenerationFailed, InferenceFailed, InvalidParameter, QueueFull,
                                 ServiceStopping)
from services.llama_backend import LlamaContext, LlamaError, LlamaModel
from services.prompt_cache import PromptCache, common_prefix_length
from services.sampling import SamplerChain, SamplingParams, TokenLogprob, token_logprobs
from services.text_stream import TextAssembler
from services.token_rate import TokenRate

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass
class TokenEvent:
    """Text of one choice (`index`), with the log-probabilities of the tokens it came from when
    the request asked for them."""

    text: str
    index: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class DoneEvent:
    """One choice ended (a request with `n` choices gets `n` of these, or one "cancelled")."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    timings: "JobTimings"
    active_at_submit: int = 0
    queued_at_submit: int = 0
    index: int = 0


def first_choice(dones: list[DoneEvent]) -> DoneEvent:
    """The done event of choice 0: the one that carries the prompt's figures (its cached tokens
    on llama-server, where each choice reports its own), whatever order the choices ended in."""
    return min(dones, key=lambda done: done.index)


@dataclass
class ErrorEvent:
    error: DomainError


Event = TokenEvent | DoneEvent | ErrorEvent


@dataclass
class JobTimings:
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None

    def report(self, completion_tokens: int) -> dict[str, float | None]:
        """Queue wait, time to first token, generation time and speed, in ms and tokens/s."""
        ms = lambda a, b: round((b - a) * 1000, 2) if a is not None and b is not None else None  # noqa: E731
        generation_s = (self.finished - self.first_token) if self.finished and self.first_token else None
        tokens_per_second = None
        if generation_s and completion_tokens > 1:
            tokens_per_second = round((completion_tokens - 1) / generation_s, 2)
        return {
            "queue_ms": ms(self.enqueued, self.started),
            "prompt_ms": ms(self.started, self.first_token),
            "ttft_ms": ms(self.enqueued, self.first_token),
            "generation_ms": ms(self.first_token, self.finished),
            "total_ms": ms(self.enqueued, self.finished),
            "tokens_per_second": tokens_per_second,
        }


class GenerationJob:
    """One request to generate: its prompt, its sampling, and where its events go. With
    `n` > 1 choices the prompt is prefilled once, in one slot, and its KV copied to the slots of
    the other choices, each of which samples with its own chain (seed + index)."""

    _ids = itertools.count(1)

    def __init__(self, prompt_tokens: list[int], params: SamplingParams, emit: Callable[[Event], None],
                 n: int = 1) -> None:
        self.id = next(self._ids)
        self.prompt_tokens = prompt_tokens
        self.params = params
        self.emit = emit
        self.n = n
        self.timings = JobTimings()
        self.completion_tokens = 0  # over all choices
        self.cached_tokens = 0
        self.cancelled = False
        # The scheduler's load when this job was accepted (reported with include_perf).
        self.active_at_submit = 0
        self.queued_at_submit = 0

    def cancel(self) -> None:
        """Ask the scheduler to stop this job; it frees the slot within one step."""
        self.cancelled = True


class Slot:
    """One KV-cache sequence. `cached` mirrors exactly the tokens whose KV is in the cache, so a
    later request with the same prefix can skip recomputing it."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cached: list[int] = []
        self.job: GenerationJob | None = None
        self.choice = 0  # which of the job's choices this slot generates
        self.produced = 0  # tokens of that choice
        self.followers: list[Slot] = []  # slots of the other choices, waiting for this prompt's KV
        self.held_logprobs: list[TokenLogprob] = []  # of tokens whose text is not emitted yet
        self.sampler: SamplerChain | None = None
        self.assembler: TextAssembler | None = None
        self.pending_prompt: list[int] = []
        self.next_token: int | None = None
        self.last_used = 0.0

    @property
    def generating(self) -> bool:
        return self.job is not None and self.next_token is not None

    @property
    def prefilling(self) -> bool:
        return self.job is not None and bool(self.pending_prompt)


class BatchScheduler:
    """Owns the llama context; runs the decode loop in its own thread."""

    def __init__(self, model: LlamaModel, ctx: LlamaContext, *, max_queue: int,
                 prefill_chunk_while_generating: int | None = None, prompt_cache: PromptCache | None = None,
                 threads: ThreadPolicy | None = None) -> None:
        """`threads`: how many threads each decode step takes (default: the context's, always)."""
        self.model = model
        self.ctx = ctx
        self.threads = threads or FixedThreads(ctx.shape.threads)
        self.threads_in_use = ctx.shape.threads
        self.prompt_cache = prompt_cache if prompt_cache is not None else PromptCache(0)
        self.n_ctx = ctx.shape.n_ctx_per_sequence
        self.n_batch = ctx.shape.n_batch
        self.max_queue = max_queue
        # While streams are generating, a long prompt is prefilled in smaller pieces so that
        # each step (and so each running stream's next token) stays quick.
        self.prefill_chunk = prefill_chunk_while_generating or max(32, self.n_batch // 4)
        self.slots = [Slot(i) for i in range(ctx.shape.n_sequences)]
        self._waiting: collections.deque[GenerationJob] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.draining = False
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        # counters for /health/details
        self.completed = 0
        self.failed = 0
        self.rejected = 0
        self.tokens_generated = 0
        self.rate = TokenRate()

    # ----- the asyncio side -------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: GenerationJob) -> None:
        with self._cv:
            if self.draining or self._stopping:
                self.rejected += 1
                raise Draining()
            if job.n > len(self.slots):
                raise InvalidParameter(f"n is {job.n}, above this instance's {len(self.slots)} parallel slots.",
                                       param="n")
            free = sum(1 for slot in self.slots if slot.job is None)
            if len(self._waiting) - free >= self.max_queue:
                self.rejected += 1
                raise QueueFull(retry_after=1)
            job.active_at_submit = len(self.slots) - free
            job.queued_at_submit = len(self._waiting)
            self._waiting.append(job)
            self._cv.notify()

    def cancel(self, job: GenerationJob) -> None:
        job.cancel()
        with self._cv:
            self._cv.notify()

    @property
    def active_count(self) -> int:
        return sum(1 for slot in self.slots if slot.job is not None)

    @property
    def queued_count(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return self.active_count == 0 and not self._waiting

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            for job in self._waiting:
                job.cancel()
            self._cv.notify()
        self._thread.join(timeout)

    # ----- the scheduler thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    if not self._waiting and self.active_count == 0:
                        self.threads.idle()  # out of work: the instances sharing our cores may take them
                    while not self._stopping and not self._waiting and self.active_count == 0:
                        self._cv.wait()
                    if self._stopping:
                        self._abort_all("the model service stopped")
                        return
                    admitted = self._admit_locked()
                for slot in admitted:
                    self._guarded(self._start_job, slot)
                self._reap_cancelled()
                if any(slot.generating or slot.prefilling for slot in self.slots):
                    self._guarded(self._step)
        except Exception:  # a bug here must not leave requests hanging forever
            log.exception("batch scheduler crashed")
            with self._cv:
                self._stopping = True
                self._abort_all("internal error in the batch scheduler")
        finally:
            self.threads.idle()

    def _guarded(self, action, *args) -> None:
        """Run one scheduling action; an unexpected error fails the jobs it touched (their
        sequences are cleared) and the scheduler goes on serving the others."""
        try:
            action(*args)
        except Exception as exc:
            log.exception("scheduler step failed")
            if isinstance(exc, LlamaError):
                error: DomainError = InferenceFailed(f"inference failed: {exc}")
            else:
                error = GenerationFailed(f"internal error while generating: {type(exc).__name__}")
            jobs = {id(slot.job) for slot in args if slot.job is not None} if args else None
            touched = [s for s in self.slots if s.job is not None and (jobs is None or id(s.job) in jobs)]
            for slot in touched:
                if slot.job is not None:
                    self.ctx.clear_sequence(slot.seq_id)
                    slot.cached = []
                    self._fail(slot, error)

    def _admit_locked(self) -> list[Slot]:
        admitted = []
        while self._waiting:
            job = self._waiting[0]
            if job.cancelled:
                self._waiting.popleft()
                self._finish_unstarted(job)
                continue
            free = [slot for slot in self.slots if slot.job is None]
            if len(free) < job.n:
                break
            self._waiting.popleft()
            # The slot whose cache shares the longest prefix with this prompt; else the one
            # unused the longest (its cache is the least likely to be wanted again).
            best = max(free, key=lambda s: (common_prefix_length(s.cached, job.prompt_tokens), -s.last_used))
            best.job = job
            best.choice = 0
            # The other choices take the slots unused the longest; their caches are overwritten
            # with the prompt's once it is prefilled.
            others = sorted((s for s in free if s is not best), key=lambda s: s.last_used)[: job.n - 1]
            for index, follower in enumerate(others, start=1):
                follower.job = job
                follower.choice = index
            best.followers = others
            admitted.append(best)
        return admitted

    def _start_job(self, slot: Slot) -> None:
        job = slot.job
        assert job is not None
        job.timings.started = time.perf_counter()
        prompt = job.prompt_tokens
        reuse = common_prefix_length(slot.cached, prompt)
        if self.prompt_cache.enabled:
            reuse = self._restore_from_cache(slot, prompt, reuse)
        if reuse >= len(prompt):
            reuse = len(prompt) - 1  # the last prompt token must be decoded to get logits
        if reuse < len(slot.cached):
            if len(slot.cached) - reuse >= self.prompt_cache.min_tokens:
                self._save_to_cache(slot)  # much of what this slot held is about to be cut: keep it in RAM
            if not self.ctx.remove_from(slot.seq_id, reuse):
                self.ctx.clear_sequence(slot.seq_id)
                reuse = 0
        slot.cached = prompt[:reuse]
        slot.pending_prompt = prompt[reuse:]
        job.cached_tokens = reuse
        for member in (slot, *slot.followers):
            member.next_token = None
            member.produced = 0
            member.held_logprobs = []
            if member is not slot:
                if self.prompt_cache.enabled and len(member.cached) >= self.prompt_cache.min_tokens:
                    self._save_to_cache(member)
                member.cached = []  # its KV is replaced by the prompt's when the prefill ends
            try:
                member.sampler = SamplerChain(self.model, job.params, choice=member.choice)
            except DomainError as exc:
                for started in (slot, *slot.followers):
                    self._release(started)
                self.failed += 1
                job.emit(ErrorEvent(exc))
                return
            member.assembler = TextAssembler(job.params.stop)

    def _restore_from_cache(self, slot: Slot, prompt: list[int], reuse: int) -> int:
        """Restore the RAM cache's best sequence for `prompt` into the slot when it covers
        clearly more of the prompt than the slot's own; returns the reusable prefix length.
        A lookup counts as a miss when at least `min_tokens` of the prompt had to be computed."""
        cache = self.prompt_cache
        entry, length = cache.best_match(prompt)
        if entry is None or length < reuse + cache.min_tokens:
            if len(prompt) - reuse >= cache.min_tokens:
                cache.record(None, 0)
            return reuse
        self._save_to_cache(slot)
        if not self.ctx.restore_sequence(slot.seq_id, entry.state):
            log.warning("llama.cpp refused a cached sequence of %d tokens", len(entry.tokens))
            slot.cached = []
            cache.record(None, 0)
            return 0
        slot.cached = list(entry.tokens)
        cache.record(entry, min(length, len(prompt) - 1))
        return length

    def _save_to_cache(self, slot: Slot) -> None:
        if self.prompt_cache.wants(slot.cached):
            self.prompt_cache.put(slot.cached, self.ctx.save_sequence(slot.seq_id))

    def _reap_cancelled(self) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot, "cancelled")

    def _step(self) -> None:
        ctx = self.ctx
        ctx.clear_batch()
        wants_logits: list[tuple[Slot, int]] = []
        for slot in self.slots:
            if slot.generating:
                index = ctx.add_to_batch(slot.next_token, len(slot.cached), slot.seq_id, True)
                slot.cached.append(slot.next_token)
                wants_logits.append((slot, index))
        budget = self.n_batch - ctx.batch.n_tokens
        if wants_logits:
            budget = min(budget, self.prefill_chunk)
        for slot in sorted((s for s in self.slots if s.prefilling), key=lambda s: s.job.id):
            if budget <= 0:
                break
            chunk = slot.pending_prompt[:budget]
            last_chunk = len(chunk) == len(slot.pending_prompt)
            for i, token in enumerate(chunk):
                index = ctx.add_to_batch(token, len(slot.cached), slot.seq_id, last_chunk and i == len(chunk) - 1)
                slot.cached.append(token)
            slot.pending_prompt = slot.pending_prompt[len(chunk):]
            budget -= len(chunk)
            if last_chunk:
                wants_logits.append((slot, index))
        threads = self.threads.for_step()
        try:
            if threads != self.threads_in_use:
                ctx.set_threads(threads)
                self.threads_in_use = threads
            ctx.decode()  # a failure fails every job in the batch (see _guarded)
        finally:
            self.threads.step_done()  # the cores this step held, back to the instances sharing them
        now = time.perf_counter()
        produced = 0
        for slot, index in list(wants_logits):
            if slot.followers:  # n > 1: the prompt is in; the other choices start from a copy of it
                for follower in slot.followers:
                    ctx.copy_sequence(slot.seq_id, follower.seq_id)
                    follower.cached = list(slot.cached)
                    wants_logits.append((follower, index))
                slot.followers = []
        for slot, index in wants_logits:
            job = slot.job
            if job is None:
                continue
            top = job.params.top_logprobs
            # Read before sampling: the log-probabilities of this very step's logits.
            logits = ctx.logits(index) if top is not None else None
            token = slot.sampler.sample(ctx.ptr, index)
            if logits is not None:
                slot.held_logprobs.append(token_logprobs(self.model, logits, token, top))
            if job.timings.first_token is None:
                job.timings.first_token = now
            produced += self._accept_token(slot, token)
        if produced:
            self.tokens_generated += produced
            self.rate.add(produced, now)

    def _emit_text(self, slot: Slot, text: str) -> None:
        logprobs, slot.held_logprobs = slot.held_logprobs, []
        slot.job.emit(TokenEvent(text, slot.choice, logprobs))

    def _accept_token(self, slot: Slot, token: int) -> int:
        job = slot.job
        if self.model.is_end_of_generation(token):
            slot.held_logprobs = slot.held_logprobs[:-1] if slot.held_logprobs else []
            self._finish(slot, "stop")
            return 0
        job.completion_tokens += 1
        slot.produced += 1
        delta, stopped = slot.assembler.push(self.model.token_bytes(token))
        if delta:
            self._emit_text(slot, delta)
        if stopped:
            self._finish(slot, "stop", flush=False)
        elif slot.produced >= job.params.max_tokens or len(slot.cached) + 1 >= self.n_ctx:
            self._finish(slot, "length")
        else:
            slot.next_token = token
        return 1

    def _finish(self, slot: Slot, reason: FinishReason, *, flush: bool = True) -> None:
        job = slot.job
        if flush and reason != "cancelled":
            tail = slot.assembler.finish()
            if tail or slot.held_logprobs:
                self._emit_text(slot, tail)
        job.timings.finished = time.perf_counter()
        if reason == "cancelled":
            # A cancelled prefill leaves a cache that no longer matches `cached` exactly.
            if slot.pending_prompt:
                self.ctx.clear_sequence(slot.seq_id)
                slot.cached = []
        else:
            self.completed += 1
        self._release(slot)
        job.emit(DoneEvent(reason, len(job.prompt_tokens), slot.produced, job.cached_tokens, job.timings,
                           job.active_at_submit, job.queued_at_submit, slot.choice))

    def _fail(self, slot: Slot, error: DomainError) -> None:
        job = slot.job
        self.failed += 1
        self._release(slot)
        job.emit(ErrorEvent(error))

    def _finish_unstarted(self, job: GenerationJob) -> None:
        job.timings.finished = time.perf_counter()
        job.emit(DoneEvent("cancelled", len(job.prompt_tokens), 0, 0, job.timings))

    def _release(self, slot: Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        with self._cv:
            slot.job = None
            slot.followers = []
            slot.held_logprobs = []
            slot.sampler = None
            slot.assembler = None
            slot.pending_prompt = []
            slot.next_token = None
            slot.last_used = time.perf_counter()

    def _abort_all(self, message: str) -> None:
        error = ServiceStopping(message)
        for job in list(self._waiting):
            job.emit(ErrorEvent(error))
        self._waiting.clear()
        for slot in self.slots:
            if slot.job is not None:
                self._fail(slot, error)
