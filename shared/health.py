"""The health report a model service publishes at `/health/details` and the gateway reads.

One schema for both sides, so a field is named once. Servers that are not ours (a plain
llama-server, vLLM, Ollama) have no such report; the gateway then works from `/health` or
`/v1/models` and its own counts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ServiceStatus = Literal["loading", "ok", "draining", "error"]


class SlotReport(BaseModel):
    total: int = Field(ge=0, description="parallel sequences the engine decodes together")
    active: int = Field(ge=0, description="slots holding a request (prefilling or generating)")
    free: int = Field(ge=0)


class QueueReport(BaseModel):
    queued: int = Field(ge=0, description="accepted requests waiting for a slot")
    max: int = Field(ge=0, description="queue bound; beyond it requests get 503 at once")


class ThroughputReport(BaseModel):
    requests_completed: int = 0
    requests_failed: int = 0
    requests_rejected: int = 0
    tokens_generated: int = 0
    tokens_per_second: float = Field(0.0, description="generated tokens/s over the last minute")


class PromptCacheReport(BaseModel):
    max_bytes: int = Field(0, description="RAM the prompt cache may use; 0: off")
    size_bytes: int = 0
    entries: int = 0
    hits: int = Field(0, description="prompts that restored a saved sequence instead of recomputing it")
    misses: int = Field(0, description="prompts with uncached tokens that no saved sequence covered")
    restored_tokens: int = 0


class HealthDetails(BaseModel):
    status: ServiceStatus
    model: str = Field(description="catalogue key of the model served")
    display_name: str = ""
    source: str = ""
    instance_id: str
    version: str
    engine: str = Field("llama-cpp-python", description="what decodes: llama-cpp-python or llama-server")
    uptime_seconds: float
    n_ctx: int = Field(description="context length of one slot, in tokens")
    threads: int = Field(description="inference threads (shared: the most it takes, while the others are idle)")
    threads_in_use: int = Field(0, description="threads of the last decode step")
    threads_shared: bool = Field(False, description="threads follow how many instances of the local fleet are busy")
    core_wait_share: float | None = Field(None, description=(
        "automatic threads: the share of its runnable time the decoding thread last waited for a core (other work "
        "on the machine); above the service's core_wait_limit it takes one thread"))
    n_batch: int
    slots: SlotReport
    queue: QueueReport
    throughput: ThroughputReport = Field(default_factory=ThroughputReport)
    max_tokens_limit: int = 0
    prompt_cache: PromptCacheReport = Field(default_factory=PromptCacheReport)
