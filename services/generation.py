"""The model service's logic, apart from HTTP: load the model, turn requests into jobs for the
batch scheduler, and report health."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator

from shared.catalogue import ModelSpec
from shared.core_board import CoreBoard, FixedThreads, RunQueueWait, SharedThreads, ThreadPolicy
from shared.core_share import with_automatic_threads
from shared.health import HealthDetails, PromptCacheReport, QueueReport, SlotReport, ThroughputReport
from services.chat_template import ChatTemplate, message_text
from services.choice_output import ChoiceOutput
from services.engine import BatchScheduler, DoneEvent, ErrorEvent, Event, GenerationJob
from services.exceptions import (ContextTooLong, Draining, InvalidParameter, ModelLoadFailed, ModelLoading,
                                 ModelNotFound, UnsupportedParameter)
from services.llama_backend import LlamaModel
from services.model_load import ModelLoad
from services.prompt_cache import PromptCache
from services.prompt_tokens import prompt_tokens
from services.protocol import ChatCompletionRequest, CompletionRequest, GenerationParams
from services.reasoning import ReasoningMarkers, ReasoningSplitter
from services.response_format import check_response_format, grammar_source
from services.sampling import CompiledGrammar, SamplingParams
from services.tools import (ToolCallStream, ToolPlan, call_grammar, messages_for_tool_template,
                            messages_without_tool_roles, plan_tools, tool_instructions)

log = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass
class PreparedRequest:
    prompt_tokens: list[int]
    params: SamplingParams
    response_format: dict | None = None   # checked; its grammar is built by `open_stream`
    n: int = 1
    tools: ToolPlan | None = None  # with required/named calls, their grammar is built by `open_stream`
    reasoning: ReasoningMarkers | None = None  # None: thinking stays inline (or not a chat)

    @property
    def forces_tool_call(self) -> bool:
        return self.tools is not None and self.tools.constrained

    @property
    def needs_grammar(self) -> bool:
        """A forced tool call or a response format: the output follows a grammar."""
        return bool(self.response_format) or self.forces_tool_call


class GenerationService:
    """One model, its batch scheduler and its state (loading, ok, draining, error)."""

    def __init__(self, spec: ModelSpec, *, instance_id: str, model_cache: Path, model_path: Path | None = None,
                 core_board: Path | None = None, core_slot: int = 0, core_wait_limit: float = 0.0,
                 model_load: ModelLoad | None = None) -> None:
        """`core_board`: the local fleet's board of busy instances; `spec.threads` is then the
        most this instance takes (when the others sharing its cores are idle). `model_load`: the
        model's load (of this `spec`, from `model_path` if any), started already; else `load`
        loads it."""
        # Automatic: every core of the machine (or the local fleet's pool, on its core board).
        self.automatic_threads = spec.threads is None or core_board is not None
        self.spec = with_automatic_threads(spec)
        self.instance_id = instance_id
        self.model_cache = model_cache
        self.model_path = model_path
        self.core_board, self.core_slot, self.core_wait_limit = core_board, core_slot, core_wait_limit
        self.status = "loading"
        self.load_error: str | None = None
        self.started_at = time.time()
        self.model: LlamaModel | None = None
        self.scheduler: BatchScheduler | None = None
        self.template: ChatTemplate | None = None
        self._bridge: EventBridge | None = None
        self._loader: threading.Thread | None = None
        self._model_load = model_load

    # ----- life cycle -------------------------------------------------------------------------
    def start_loading(self) -> None:
        """`load` in a thread, once: /health answers `loading` meanwhile."""
        if self._loader is None:
            self._loader = threading.Thread(target=self.load, name="model-loader", daemon=True)
            self._loader.start()

    def load(self) -> None:
        """Load the model and start the scheduler (blocking: run it off the event loop)."""
        try:
            model_load = self._model_load or ModelLoad(self.spec, model_cache=self.model_cache,
                                                       model_path=self.model_path)
            loaded = model_load.result()
            self._adopt_vocabulary(loaded.model)
            self.scheduler = BatchScheduler(loaded.model, loaded.context, max_queue=self.spec.max_queue,
                                            prompt_cache=PromptCache(self.spec.prompt_cache_mb * 2**20),
                                            threads=self._thread_policy())
            self.scheduler.draining = self.status == "draining"  # a drain began while it loaded
            self.scheduler.start()
            self._loaded()
            log.info("%s ready: %d slots of %d tokens", self.spec.key, self.spec.parallel, self.spec.n_ctx)
        except Exception as exc:
            log.exception("could not load %s", self.spec.key)
            self.status = "error"
            self.load_error = str(exc)

    def _adopt_vocabulary(self, model: LlamaModel) -> None:
        """What either engine takes from the model's vocabulary and metadata: the context of each
        sequence (the catalogue's, at most the trained one) and the chat template (the
        catalogue's, else the GGUF's) with the model's BOS and EOS text."""
        self.spec = self.spec.model_copy(update={"n_ctx": model.context_for(self.spec.n_ctx)})

        def text(token: int) -> str:
            return model.token_bytes(token).decode("utf-8", "replace") if token >= 0 else ""

        self.template = ChatTemplate(self.spec.chat_template or model.metadata("tokenizer.chat_template"),
                                     bos_token=text(model.bos), eos_token=text(model.eos))
        self.model = model

    def _thread_policy(self) -> ThreadPolicy:
        """Threads set in the catalogue or by the fleet's fixed share stay as they are."""
        if not self.automatic_threads or self.spec.threads == 1:
            return FixedThreads(self.spec.threads)
        board = CoreBoard(self.core_board) if self.core_board is not None else None
        return SharedThreads(board, self.core_slot, self.spec.threads,
                             contention=RunQueueWait(self.core_wait_limit) if self.core_wait_limit else None)

    def _loaded(self) -> None:
        """Ready, unless a drain began while it loaded."""
        if self.status == "loading":
            self.status = "ok"

    def start_draining(self) -> None:
        if self.status in ("ok", "loading"):
            self.status = "draining"
        if self.scheduler:
            self.scheduler.draining = True

    @property
    def idle(self) -> bool:
        return self.scheduler is None or self.scheduler.idle

    def shutdown(self) -> None:
        if self.scheduler:
            self.scheduler.stop()

    async def aclose(self) -> None:
        """Stop, from the app's lifespan (an engine with connections closes them first)."""
        self.shutdown()

    # ----- requests ---------------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name not in (self.spec.key, self.spec.display_name):
            raise ModelNotFound(name)

    def _require_ready(self) -> None:
        if self.status == "loading":
            raise ModelLoading()
        if self.status == "draining":
            raise Draining()
        if self.status != "ok":
            raise ModelLoadFailed(self.load_error)

    def prepare_chat(self, request: ChatCompletionRequest) -> PreparedRequest:
        self.check_model(request.model)
        self._require_ready()
        plan = plan_tools(request.tools, request.tool_choice, request.parallel_tool_calls)
        prompt = self._render(request, plan)
        add_bos = self.model.add_bos and not (self.template.bos_token and prompt.startswith(self.template.bos_token))
        tokens = prompt_tokens(self.model, prompt, self.spec.n_ctx, add_special=add_bos, parse_special=True)
        params = self._sampling(request, len(tokens))
        reasoning = None
        if request.reasoning_format != "none":
            reasoning = ReasoningMarkers.for_template(self.template.source, prompt)
        return PreparedRequest(tokens, params, self._response_format(request), request.choices, tools=plan,
                               reasoning=reasoning)

    def _render(self, request: ChatCompletionRequest, plan: ToolPlan | None) -> str:
        """The prompt, with the tools where the template puts them; for a template without
        tool support, in a system message of ours, and past calls and results as plain turns."""
        messages = [message.model_dump(exclude_none=True) for message in request.messages]
        variables = self.template.variables(request.chat_template_kwargs)
        if self.template.supports_tools:
            tools = plan.tools if plan is not None else None
            return self.template.render(messages_for_tool_template(messages), tools=tools, **variables)
        messages = messages_without_tool_roles(messages)
        if plan is not None:
            instructions = tool_instructions(plan)
            if messages and messages[0].get("role") in ("system", "developer"):
                first = messages[0]
                messages[0] = {**first, "content": f"{message_text(first.get('content'))}\n\n{instructions}"}
            else:
                messages.insert(0, {"role": "system", "content": instructions})
        return self.template.render(messages, **variables)

    def prepare_completion(self, request: CompletionRequest) -> PreparedRequest:
        self.check_model(request.model)
        self._require_ready()
        if request.echo:
            raise UnsupportedParameter("echo is not supported", param="echo")
        prompt = request.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidParameter("Send one prompt per request (a list must hold exactly one string).",
                                       param="prompt")
            prompt = prompt[0]
        tokens = prompt_tokens(self.model, prompt, self.spec.n_ctx, add_special=self.model.add_bos, parse_special=False)
        if not tokens:
            raise InvalidParameter("The prompt is empty.", param="prompt")
        return PreparedRequest(tokens, self._sampling(request, len(tokens)), self._response_format(request),
                               request.choices)

    def _sampling(self, request: ChatCompletionRequest | CompletionRequest, n_prompt: int) -> SamplingParams:
        spec = self.spec
        if request.choices > spec.parallel:
            raise InvalidParameter(f"n is {request.choices}; this instance generates at most {spec.parallel} "
                                   "choices at once (its parallel slots).", param="n")
        if n_prompt >= spec.n_ctx:
            raise ContextTooLong(spec.n_ctx, n_prompt)
        requested = request.max_completion_tokens or request.max_tokens
        if requested is not None and requested > spec.max_tokens_limit:
            raise InvalidParameter(f"max_tokens is {requested}, above this model's limit of {spec.max_tokens_limit}.",
                                   param="max_tokens")
        # What does not fit in the context after the prompt is cut with finish_reason "length".
        max_tokens = min(requested or spec.default_max_tokens, spec.n_ctx - n_prompt - 1)
        stops = request.stop_list()
        if len(stops) > 16 or any(not isinstance(s, str) or not s for s in stops):
            raise InvalidParameter("stop must be a non-empty string or a list of at most 16 non-empty strings.",
                                   param="stop")
        # Fields the request leaves out take the model's sampling defaults (catalogue), else
        # SamplingParams' own (the one place they are named).
        given = spec.sampling.given() | {name: getattr(request, name) for name in (
            "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
            if getattr(request, name) is not None}
        return SamplingParams(
            **given,
            seed=request.seed,
            stop=tuple(dict.fromkeys([*spec.stop, *stops])),
            max_tokens=max_tokens,
            top_logprobs=request.wanted_top_logprobs,
        )

    def choice_output(self, prepared: PreparedRequest, index: int) -> ChoiceOutput:
        """How the text of one choice becomes content, reasoning and tool calls."""
        tools = ToolCallStream(prepared.tools) if prepared.tools is not None else None
        reasoning = ReasoningSplitter(prepared.reasoning) if prepared.reasoning is not None else None
        return ChoiceOutput(index, reasoning=reasoning, tools=tools)

    @staticmethod
    def _response_format(request: GenerationParams) -> dict | None:
        """The request's response format, checked against the schema limits (a 400 if not)."""
        check_response_format(request.response_format)
        response_format = request.response_format
        return response_format if response_format and response_format.get("type") not in (None, "text") else None

    @staticmethod
    def grammar_for(prepared: PreparedRequest) -> tuple[str, str] | None:
        """The GBNF of the forced tool call or of the response format, and the request field it
        comes from; None when the output is free."""
        if prepared.forces_tool_call:
            gbnf, param = call_grammar(prepared.tools), "tools"
        else:
            gbnf, param = grammar_source(prepared.response_format), "response_format"
        return (gbnf, param) if gbnf else None

    def _compile_grammars(self, prepared: PreparedRequest) -> tuple[CompiledGrammar, ...]:
        """The grammar, compiled once per choice (each sequence's grammar keeps its own state)."""
        grammar = self.grammar_for(prepared)
        if grammar is None:
            return ()
        return tuple(CompiledGrammar(self.model, grammar[0], param=grammar[1]) for _ in range(prepared.n))

    async def open_stream(self, prepared: PreparedRequest) -> "JobStream":
        """Submit a job at once (so a full queue is answered before any byte is sent).

        A grammar (forced tool call, response format) is converted and compiled first, in a
        worker thread."""
        if prepared.needs_grammar:
            grammars = await asyncio.to_thread(self._compile_grammars, prepared)
            prepared.params = replace(prepared.params, grammars=grammars)
        loop = asyncio.get_running_loop()
        if self._bridge is None or self._bridge.loop is not loop:
            self._bridge = EventBridge(loop)
        return JobStream(self.scheduler, self._bridge, prepared)

    # ----- health -----------------------------------------------------------------------------
    async def refresh_details(self) -> None:
        """Bring `health_details()` up to date (this engine's figures are always current)."""

    def health_details(self) -> HealthDetails:
        scheduler = self.scheduler
        active = scheduler.active_count if scheduler else 0
        return HealthDetails(
            status=self.status,
            model=self.spec.key,
            display_name=self.spec.display_name,
            source=str(self.spec.source),
            instance_id=self.instance_id,
            version=VERSION,
            engine=self.spec.engine,
            uptime_seconds=round(time.time() - self.started_at, 1),
            n_ctx=self.spec.n_ctx,
            threads=self.spec.threads,
            threads_in_use=scheduler.threads_in_use if scheduler else self.spec.threads,
            threads_shared=self.core_board is not None,
            core_wait_share=_wait_share(scheduler),
            n_batch=self.spec.n_batch,
            slots=SlotReport(total=self.spec.parallel, active=active, free=self.spec.parallel - active),
            queue=QueueReport(queued=scheduler.queued_count if scheduler else 0, max=self.spec.max_queue),
            throughput=ThroughputReport(
                requests_completed=scheduler.completed if scheduler else 0,
                requests_failed=scheduler.failed if scheduler else 0,
                requests_rejected=scheduler.rejected if scheduler else 0,
                tokens_generated=scheduler.tokens_generated if scheduler else 0,
                tokens_per_second=scheduler.rate.per_second() if scheduler else 0.0,
            ),
            max_tokens_limit=self.spec.max_tokens_limit,
            prompt_cache=PromptCacheReport(**vars(scheduler.prompt_cache.report())) if scheduler else
            PromptCacheReport(max_bytes=self.spec.prompt_cache_mb * 2**20),
        )


def _wait_share(scheduler: BatchScheduler | None) -> float | None:
    contention = getattr(scheduler.threads, "contention", None) if scheduler else None
    return round(contention.share, 3) if contention is not None else None


class EventBridge:
    """Hands events from the scheduler thread to the event loop with one wake-up for everything
    a decode step produced, rather than one per token per request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, Event]] = []
        self._scheduled = False

    def put(self, queue: asyncio.Queue, event: Event) -> None:
        with self._lock:
            self._pending.append((queue, event))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._pending = self._pending, []
            self._scheduled = False
        for queue, event in items:
            queue.put_nowait(event)


class EventStream:
    """The events of one request's choices, read on the event loop, whichever engine makes them.
    Closing it before the end (a client that went away) cancels what is still generating."""

    def __init__(self, n: int) -> None:
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._finished = False
        self._open_choices = n

    def close(self) -> None:
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while not self._finished:
                event = await self._events.get()
                if isinstance(event, DoneEvent):
                    self._open_choices -= 1
                    # One "cancelled" ends the whole job (an unstarted job reports it once).
                    self._finished = self._open_choices <= 0 or event.finish_reason == "cancelled"
                elif isinstance(event, ErrorEvent):
                    self._finished = True
                yield event
        finally:
            self.close()


class JobStream(EventStream):
    """The events of one job of the in-process scheduler; cancelling it frees its slot within
    one scheduler step."""

    def __init__(self, scheduler: BatchScheduler, bridge: EventBridge, prepared: PreparedRequest) -> None:
        super().__init__(prepared.n)
        self._scheduler = scheduler
        self.job = GenerationJob(prepared.prompt_tokens, prepared.params,
                                 lambda event: bridge.put(self._events, event), n=prepared.n)
        scheduler.submit(self.job)

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._scheduler.cancel(self.job)

