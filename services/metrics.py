"""Prometheus metrics of one model service (`/metrics`), read from the service at scrape time:
the RAM prompt cache, slots, queue and throughput."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.generation import GenerationService


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


def render_metrics(service: GenerationService) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServiceCollector(service))
    return generate_latest(registry)
