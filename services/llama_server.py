"""The `llama-server` engine: llama.cpp's own server as a child process, fronted by our service.

The service does what it does for the in-process engine (the model's chat template, tools,
reasoning split, bounds and validation, error shapes, health states, drain), loading only the
model's vocabulary to tokenize; the child does the decoding. Each choice of a request is one
streamed `POST /completion` to the child with the prompt as token ids, our sampling settings and,
for forced tool calls or a response format, our GBNF grammar. Its stream is turned into the same
`TokenEvent`/`DoneEvent`/`ErrorEvent`s the in-process scheduler emits, so `services.app` shapes
the answers the same way whichever engine ran.

The child listens on a private loopback port with a random API key (in its environment, not its
command line), sees an allow-listed environment, runs in its own process group, and is sent
SIGTERM by the kernel if the thread that started it (the one that then waits on it) goes away,
so killing our process leaves no orphan.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from scripts.child_env import llama_server_env
from shared.health import HealthDetails, PromptCacheReport, QueueReport, SlotReport, ThroughputReport
from shared.model_files import resolve_model_file
from shared.processes import ChildProcess, free_port
from services.engine import DoneEvent, ErrorEvent, JobTimings, TokenEvent
from services.exceptions import (GenerationFailed, InferenceFailed, InvalidParameter, QueueFull,
                                 ServiceStopping)
from services.generation import VERSION, EventStream, GenerationService, PreparedRequest
from services.llama_backend import LlamaModel
from services.sampling import TokenLogprob
from services.token_rate import TokenRate

log = logging.getLogger(__name__)

ENGINE = "llama-server"
MAX_ERROR_BYTES = 64 * 1024
DETAILS_TIMEOUT = 2.0


def find_binary(configured: Path | None) -> Path:
    """The configured binary, else the one the install put beside our Python, else PATH's."""
    if configured is not None:
        return configured
    beside = Path(sys.prefix) / "bin" / "llama-server"
    if beside.exists():
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else beside


def server_arguments(binary: Path, model_path: Path, spec, port: int) -> list[str]:
    """The child's command line: the catalogue's settings as llama-server's options. Each slot
    gets `n_ctx` tokens of its own (`-c` is the total, not unified), as in the in-process engine."""
    return [str(binary), "--model", str(model_path), "--host", "127.0.0.1", "--port", str(port),
            "--ctx-size", str(spec.n_ctx * spec.parallel), "--parallel", str(spec.parallel), "--no-kv-unified",
            "--threads", str(spec.threads), "--threads-batch", str(spec.threads), "--batch-size", str(spec.n_batch),
            "--cache-ram", str(spec.prompt_cache_mb), "--metrics", "--slots", "--no-webui",
            "--log-verbosity", "2"]


class LlamaServerService(GenerationService):
    """A `GenerationService` whose decoding runs in a `llama-server` child."""

    def __init__(self, spec, *, instance_id: str, model_cache: Path, binary: Path | None = None,
                 request_timeout: float = 600.0, model_path: Path | None = None) -> None:
        super().__init__(spec, instance_id=instance_id, model_cache=model_cache, model_path=model_path)
        self.binary = find_binary(binary)
        self.request_timeout = request_timeout
        self.child: ChildProcess | None = None
        self._api_key = secrets.token_urlsafe(24)
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.in_flight = 0  # choices sent to the child and not yet ended
        self.completed = self.failed = self.rejected = 0
        self.rate = TokenRate()
        self._slots: list[dict[str, Any]] = []
        self._metrics: dict[str, float] = {}

    # ----- life cycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Load the vocabulary, start the child, wait until it answers, then stay with it (this
        thread started it: the kernel's parent-death signal follows it) and report `error` if it
        ever exits on its own."""
        try:
            if not self.binary.exists():
                raise FileNotFoundError(f"the llama-server binary is missing at {self.binary}; `make install` "
                                        "builds it (scripts/build_llama_server.sh)")
            path = self.model_path or resolve_model_file(self.spec, self.model_cache)
            self._adopt_vocabulary(LlamaModel(path, vocab_only=True))
            port = free_port()
            self.child = ChildProcess(ENGINE, server_arguments(self.binary, path, self.spec, port), port=port,
                                      log_path=None, env=llama_server_env(os.environ, self._api_key),
                                      inherit_env=False, command=True,
                                      # Nobody is left to drain for once we are gone; llama-server's
                                      # own SIGTERM shutdown was seen to outlast 30 s (a CI run).
                                      death_signal=signal.SIGKILL)
            log.info("starting %s for %s on 127.0.0.1:%d", ENGINE, self.spec.key, port)
            self.child.start()
            # Asked every 20 ms (a loopback probe of our own child): the default 0.2 s would add
            # 0.1 s on average to every cold start of this engine.
            self.child.wait_ready("/health", timeout=600.0, abort=lambda: "shutdown" if self._stopping else None,
                                  interval=0.02)
            self._loaded()
            log.info("%s ready (%s): %d slots of %d tokens", self.spec.key, ENGINE, self.spec.parallel,
                     self.spec.n_ctx)
        except Exception as exc:
            log.exception("could not start %s for %s", ENGINE, self.spec.key)
            self.status = "error"
            self.load_error = str(exc)
            if self.child is not None:
                self.child.stop(timeout=5)
            return
        code = self.child.process.wait()
        if not self._stopping:
            log.error("%s exited with %s", ENGINE, code)
            self.status = "error"
            self.load_error = f"{ENGINE} exited with {code}"

    @property
    def idle(self) -> bool:
        return self.in_flight == 0

    def shutdown(self) -> None:
        """Stop the child (after a drain, nothing is in flight): SIGTERM, then SIGKILL."""
        self._stopping = True
        if self.child is not None:
            self.child.stop(timeout=10)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self.shutdown()

    # ----- requests ---------------------------------------------------------------------------
    def _client_for_loop(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.child.url, headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=httpx.Timeout(10.0, read=self.request_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
            self._client_loop = loop
        return self._client

    def completion_body(self, prepared: PreparedRequest, index: int,
                        grammar: tuple[str, str] | None = None) -> dict[str, Any]:
        """llama-server's `/completion` request for choice `index` of `prepared`; `grammar`:
        `grammar_for(prepared)`, converted by the caller (off the event loop)."""
        p = prepared.params
        body: dict[str, Any] = {
            "prompt": prepared.prompt_tokens, "stream": True, "cache_prompt": True, "n_predict": p.max_tokens,
            "temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k, "min_p": p.min_p,
            "repeat_penalty": p.repeat_penalty, "repeat_last_n": p.penalty_last_n,
            "presence_penalty": p.presence_penalty, "frequency_penalty": p.frequency_penalty,
            "stop": list(p.stop),
        }
        if p.seed is not None:
            body["seed"] = (p.seed + index) & 0xFFFFFFFF  # each choice its own seed, as in-process
        if p.top_logprobs is not None:
            body["n_probs"] = max(p.top_logprobs, 1)  # the sampled token's own comes with one
            body["post_sampling_probs"] = False  # log-softmax of the raw logits, as in-process
        if grammar is not None:
            body["grammar"] = grammar[0]
        return body

    async def open_stream(self, prepared: PreparedRequest) -> "ServerJobStream":
        """Send each choice to the child and wait for its answer's headers, so a refusal (a full
        queue, a grammar it rejects) is an HTTP error before any byte of ours is sent."""
        if self.in_flight + prepared.n > self.spec.parallel + self.spec.max_queue:
            self.rejected += 1
            raise QueueFull(retry_after=2)
        active, queued = min(self.in_flight, self.spec.parallel), max(0, self.in_flight - self.spec.parallel)
        # Counted before any wait: requests arriving meanwhile see these choices against the bound.
        self.in_flight += prepared.n
        try:
            client = self._client_for_loop()
            # Converting a schema to GBNF is bounded but not instant: a worker thread, as in-process.
            grammar = await asyncio.to_thread(self.grammar_for, prepared) \
                if prepared.needs_grammar else None
        except BaseException:
            self.in_flight -= prepared.n
            raise
        param = grammar[1] if grammar else "prompt"
        timings = JobTimings()
        sends = [asyncio.ensure_future(client.send(client.build_request(
            "POST", "/completion", json=self.completion_body(prepared, i, grammar)), stream=True)) for i in range(prepared.n)]
        try:
            responses = await asyncio.gather(*sends)
            for response in responses:
                if response.status_code != 200:
                    raise await child_error(response, param)
        except BaseException as exc:
            for send in sends:
                send.cancel()
            for send in sends:
                if send.done() and not send.cancelled() and send.exception() is None:
                    await send.result().aclose()
            self.in_flight -= prepared.n
            self.failed += 1
            if isinstance(exc, httpx.HTTPError):
                raise InferenceFailed(f"{ENGINE} did not answer: {type(exc).__name__}") from exc
            raise
        return ServerJobStream(self, responses, len(prepared.prompt_tokens), prepared.params.top_logprobs,
                               timings, active, queued)

    def choice_ended(self, completion_tokens: int) -> None:
        self.in_flight -= 1
        self.rate.add(completion_tokens)

    def request_ended(self, ok: bool) -> None:
        if ok:
            self.completed += 1
        else:
            self.failed += 1

    # ----- health -----------------------------------------------------------------------------
    async def refresh_details(self) -> None:
        """Read the child's `/slots` and `/metrics` for the next `health_details()`."""
        if self.status not in ("ok", "draining") or self.child is None:
            return
        client = self._client_for_loop()
        try:
            slots, metrics = await asyncio.gather(client.get("/slots", timeout=DETAILS_TIMEOUT),
                                                  client.get("/metrics", timeout=DETAILS_TIMEOUT))
        except httpx.HTTPError as exc:
            log.warning("%s did not report its slots and metrics: %s", ENGINE, exc)
            return
        try:
            if slots.status_code == 200:
                reported = slots.json()
                if isinstance(reported, list):
                    self._slots = [slot for slot in reported if isinstance(slot, dict)]
            if metrics.status_code == 200:
                self._metrics = {sample.name: sample.value
                                 for family in text_string_to_metric_families(metrics.text) for sample in family.samples}
        except ValueError as exc:  # garbage from the child: keep the last good report
            log.warning("%s reported unreadable slots or metrics: %s", ENGINE, exc)

    def health_details(self) -> HealthDetails:
        total = len(self._slots) or self.spec.parallel
        active = sum(1 for slot in self._slots if slot.get("is_processing"))
        deferred = int(self._metrics.get("llamacpp:requests_deferred", 0))
        return HealthDetails(
            status=self.status, model=self.spec.key, display_name=self.spec.display_name,
            source=str(self.spec.source), instance_id=self.instance_id, version=VERSION, engine=ENGINE,
            uptime_seconds=round(time.time() - self.started_at, 1), n_ctx=self.spec.n_ctx,
            threads=self.spec.threads, n_batch=self.spec.n_batch,
            slots=SlotReport(total=total, active=active, free=max(total - active, 0)),
            queue=QueueReport(queued=deferred, max=self.spec.max_queue),
            throughput=ThroughputReport(
                requests_completed=self.completed, requests_failed=self.failed, requests_rejected=self.rejected,
                tokens_generated=int(self._metrics.get("llamacpp:tokens_predicted_total", 0)),
                tokens_per_second=self.rate.per_second()),
            max_tokens_limit=self.spec.max_tokens_limit,
            # The child's RAM prompt cache (--cache-ram): its bound; it does not count hits.
            prompt_cache=PromptCacheReport(max_bytes=self.spec.prompt_cache_mb * 2**20),
        )


async def child_error(response: httpx.Response, param: str) -> Exception:
    """The child's refusal as one of our errors (its body read up to a bound)."""
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_ERROR_BYTES:
            break
    await response.aclose()
    message = error_message(body) or f"HTTP {response.status_code}"
    if response.status_code == 400:
        return InvalidParameter(f"{ENGINE} refused the request: {message}", param=param)
    if response.status_code == 503:
        return ServiceStopping(f"{ENGINE} is unavailable: {message}")
    return InferenceFailed(f"{ENGINE} failed: {message}")


def error_message(body: bytes) -> str:
    try:
        parsed = json.loads(body[:MAX_ERROR_BYTES])
    except ValueError:
        return body[:500].decode("utf-8", "replace").strip()
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:500]
    return str(error or "")[:500]


def token_logprobs(entries: list[dict[str, Any]], top: int) -> list[TokenLogprob]:
    """llama-server's `completion_probabilities` (log-softmax of the raw logits) as ours."""
    return [TokenLogprob(bytes(entry.get("bytes") or entry.get("token", "").encode()), float(entry["logprob"]),
                         tuple((bytes(alt.get("bytes") or alt.get("token", "").encode()), float(alt["logprob"]))
                               for alt in entry.get("top_logprobs", [])[:top]))
            for entry in entries]


class ServerJobStream(EventStream):
    """The events of one request's choices, read from the child's streams. Closing it before the
    end closes the child's streams, which cancels their tasks (llama-server stops a task whose
    client went away)."""

    def __init__(self, service: LlamaServerService, responses: list[httpx.Response], prompt_tokens: int,
                 top_logprobs: int | None, timings: JobTimings, active: int, queued: int) -> None:
        super().__init__(len(responses))
        self.service = service
        self.prompt_tokens = prompt_tokens
        self.top = top_logprobs  # None: no log-probabilities; else this many alternatives
        self.timings = timings
        self.active, self.queued = active, queued
        self._relaying = len(responses)
        self._ok = True
        self._tasks = [asyncio.ensure_future(self._relay(index, response))
                       for index, response in enumerate(responses)]

    def close(self) -> None:
        """Cancel the choices still generating (none after a normal end)."""
        self._finished = True
        if self._open_choices > 0:
            self._ok = False
            for task in self._tasks:
                task.cancel()

    async def _relay(self, index: int, response: httpx.Response) -> None:
        completion_tokens, ok, top = 0, False, self.top
        try:
            async for line in response.aiter_lines():
                if not line.startswith(("data:", "error:")):
                    continue
                chunk = parse_chunk(line)
                if "error" in chunk or line.startswith("error:"):
                    message = error_message(line.partition(":")[2].encode())
                    self._events.put_nowait(ErrorEvent(InferenceFailed(f"{ENGINE} failed: {message}")))
                    return
                text = chunk.get("content") or ""
                logprobs = token_logprobs(chunk.get("completion_probabilities") or [], top) if top is not None else []
                if text or logprobs:
                    if self.timings.first_token is None:
                        self.timings.first_token = time.perf_counter()
                    self._events.put_nowait(TokenEvent(text, index, logprobs))
                if chunk.get("stop"):
                    completion_tokens = int(chunk.get("tokens_predicted", 0))
                    self._events.put_nowait(self._done(index, chunk))
                    ok = True
                    return
            self._events.put_nowait(ErrorEvent(GenerationFailed(f"{ENGINE} ended the stream without a result.")))
        except httpx.HTTPError as exc:
            self._events.put_nowait(ErrorEvent(InferenceFailed(f"{ENGINE} stream broke: {type(exc).__name__}")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a chunk of the wrong shape
            self._events.put_nowait(ErrorEvent(InferenceFailed(f"{ENGINE} sent an unreadable result: "
                                                               f"{type(exc).__name__}")))
        finally:
            self.service.choice_ended(completion_tokens)
            self._ok = self._ok and ok
            self._relaying -= 1
            if self._relaying == 0:
                self.service.request_ended(self._ok)
            await response.aclose()

    def _done(self, index: int, chunk: dict[str, Any]) -> DoneEvent:
        now = time.perf_counter()
        timings = self.timings
        timings.finished = now
        reported = chunk.get("timings") or {}
        if timings.first_token is None:
            timings.first_token = now
        prompt_ms = reported.get("prompt_ms")
        if timings.started is None:
            started = timings.first_token - (prompt_ms or 0) / 1000
            timings.started = max(started, timings.enqueued)
        reason = "length" if chunk.get("stop_type") == "limit" else "stop"
        return DoneEvent(reason, prompt_tokens=self.prompt_tokens,
                         completion_tokens=int(chunk.get("tokens_predicted", 0)),
                         cached_tokens=int(reported.get("cache_n", 0)) if index == 0 else 0,
                         timings=timings, active_at_submit=self.active, queued_at_submit=self.queued, index=index)


def parse_chunk(line: str) -> dict[str, Any]:
    try:
        parsed = json.loads(line.partition(":")[2])
    except ValueError:
        return {"error": "unreadable chunk"}
    return parsed if isinstance(parsed, dict) else {"error": "unreadable chunk"}
