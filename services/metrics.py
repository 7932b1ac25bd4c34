"""The model service's own Prometheus metrics (`GET /metrics`).

Request counts by endpoint and status, prompt / completion / prefix-cached tokens, time to first
token and per-token latency histograms are recorded as requests end; queue depth and slot use
are read from the scheduler when Prometheus scrapes. Each app has its own registry, so several
services can live in one process (tests) without clashing.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.engine import DoneEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)


class _LoadCollector(Collector):
    def __init__(self, load: Callable[[], tuple[int, int, int, int]]) -> None:
        self._load = load

    def collect(self) -> Iterable[GaugeMetricFamily]:
        queued, max_queue, active, total = self._load()
        yield GaugeMetricFamily("arena_service_queue_depth", "Requests waiting for a slot.", value=queued)
        yield GaugeMetricFamily("arena_service_queue_capacity", "Requests that may wait before 503s.", value=max_queue)
        yield GaugeMetricFamily("arena_service_slots_active", "Slots generating or prefilling.", value=active)
        yield GaugeMetricFamily("arena_service_slots_total", "Parallel slots.", value=total)


class ServiceMetrics:
    def __init__(self, load: Callable[[], tuple[int, int, int, int]]) -> None:
        """`load`: (queued, max queue, active slots, total slots), read at each scrape."""
        self.registry = CollectorRegistry()
        self.requests = Counter("arena_service_requests", "Requests answered, by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=self.registry)
        self.prompt_tokens = Counter("arena_service_prompt_tokens", "Prompt tokens of finished requests.",
                                     registry=self.registry)
        self.completion_tokens = Counter("arena_service_completion_tokens", "Tokens generated.",
                                         registry=self.registry)
        self.cached_tokens = Counter("arena_service_prefix_cache_tokens",
                                     "Prompt tokens whose KV was reused from a slot's cache.", registry=self.registry)
        self.cache_hits = Counter("arena_service_prefix_cache_hits",
                                  "Requests that reused a cached prompt prefix.", registry=self.registry)
        self.ttft = Histogram("arena_service_time_to_first_token_seconds",
                              "From arrival to the first generated token.", buckets=TTFT_BUCKETS,
                              registry=self.registry)
        self.token_latency = Histogram("arena_service_time_per_output_token_seconds",
                                       "Mean time between generated tokens, per request.", buckets=TOKEN_BUCKETS,
                                       registry=self.registry)
        self.registry.register(_LoadCollector(load))

    def observe(self, dones: list[DoneEvent]) -> None:
        """One finished request (all its choices)."""
        if not dones:
            return
        first = dones[0]
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


class RequestCounter:
    """Pure ASGI middleware counting the `/v1/` requests by endpoint and status (streams pass
    through untouched: it only looks at the response's start)."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/"):
            return await self.app(scope, receive, send)
        endpoint = path if path in ("/v1/chat/completions", "/v1/completions") else "/v1/other"
        status = {"code": 500}

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
