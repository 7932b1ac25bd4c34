"""The model service's own Prometheus metrics (`GET /metrics`).

Read from the service when Prometheus scrapes: the RAM prompt cache, slots, queue and
throughput. Recorded as requests end: requests by endpoint and status, prompt / completion /
prefix-cached tokens, prefix-cache hits, time to first token and time per output token. Each
app has its own registry, so several services can live in one process (tests) without clashing.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.engine import DoneEvent, first_choice
from services.generation import GenerationService

TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)


class _ServiceCollector(Collector):
    def __init__(self, service: GenerationService) -> None:
        self.service = service

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        details = self.service.health_details()
        cache = details.prompt_cache
        labels = ["model"]
        model = [details.model]

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, text, labels=labels)
            family.add_metric(model, value)
            return family

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, text, labels=labels)
            family.add_metric(model, value)
            return family

        return [
            gauge("arena_service_prompt_cache_bytes", "RAM held by the prompt cache", cache.size_bytes),
            gauge("arena_service_prompt_cache_max_bytes", "RAM the prompt cache may hold", cache.max_bytes),
            gauge("arena_service_prompt_cache_entries", "sequences saved in the prompt cache", cache.entries),
            counter("arena_service_prompt_cache_hits", "prompts restored from the prompt cache", cache.hits),
            counter("arena_service_prompt_cache_misses", "prompts the prompt cache could not help", cache.misses),
            counter("arena_service_prompt_cache_restored_tokens", "prompt tokens restored from the prompt cache",
                    cache.restored_tokens),
            gauge("arena_service_slots_active", "slots holding a request", details.slots.active),
            gauge("arena_service_slots_total", "parallel slots", details.slots.total),
            gauge("arena_service_queued_requests", "requests waiting for a slot", details.queue.queued),
            counter("arena_service_tokens_generated", "tokens generated", details.throughput.tokens_generated),
            counter("arena_service_requests_completed", "requests completed", details.throughput.requests_completed),
        ]


class ServiceMetrics:
    def __init__(self, service: GenerationService) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceCollector(service))
        self.requests = Counter("arena_service_requests", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.prompt_tokens = Counter("arena_service_prompt_tokens", "Prompt tokens of finished requests.",
                                     registry=self.registry)
        self.completion_tokens = Counter("arena_service_completion_tokens", "Tokens generated for finished requests.",
                                         registry=self.registry)
        self.cached_tokens = Counter("arena_service_prefix_cache_tokens",
                                     "Prompt tokens whose KV was reused (a slot's cache or the RAM cache).",
                                     registry=self.registry)
        self.cache_hits = Counter("arena_service_prefix_cache_hits",
                                  "Requests that reused a cached prompt prefix.", registry=self.registry)
        self.ttft = Histogram("arena_service_time_to_first_token_seconds",
                              "From arrival to the first generated token.", buckets=TTFT_BUCKETS,
                              registry=self.registry)
        self.token_latency = Histogram("arena_service_time_per_output_token_seconds",
                                       "Mean time between generated tokens, per choice.", buckets=TOKEN_BUCKETS,
                                       registry=self.registry)

    def observe(self, dones: list[DoneEvent]) -> None:
        """One finished request (all its choices)."""
        if not dones:
            return
        first = first_choice(dones)
        self.prompt_tokens.inc(first.prompt_tokens)
        self.completion_tokens.inc(sum(done.completion_tokens for done in dones))
        if first.cached_tokens:
            self.cached_tokens.inc(first.cached_tokens)
            self.cache_hits.inc()
        timings = first.timings
        if timings.first_token is not None:
            self.ttft.observe(timings.first_token - timings.enqueued)
        for done in dones:
            t = done.timings
            if t.first_token is not None and t.finished is not None and done.completion_tokens > 1:
                self.token_latency.observe((t.finished - t.first_token) / (done.completion_tokens - 1))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


ACCESS_LOGGER = "services.access"


class RequestCounter:
    """Pure ASGI middleware counting the `/v1/` requests by endpoint and status, and writing
    one log line for each when it ends (streams pass through untouched: it only looks at the
    response's start)."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            return await self.app(scope, receive, send)
        endpoint = path if path in ("/v1/chat/completions", "/v1/completions") else "/v1/other"
        status = {"code": 500}
        started = time.perf_counter()

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            logging.getLogger(ACCESS_LOGGER).info("request", extra={
                "endpoint": endpoint, "status": status["code"], "ms": round((time.perf_counter() - started) * 1000, 2)})
