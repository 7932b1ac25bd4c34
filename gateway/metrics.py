"""Prometheus metrics of the gateway, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.instances import InstanceRegistry, InstanceState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class _InstanceCollector(Collector):
    """Instance gauges, read from the registry at scrape time (so removed instances vanish)."""

    def __init__(self, instances: InstanceRegistry) -> None:
        self.instances = instances
        self.live_load_hidden: Callable[[], bool] = lambda: False   # the arena sets it (gateway.arena.activity)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        state = GaugeMetricFamily("arena_gateway_instance_state",
                                  "1 for the state each instance is in, 0 for the others",
                                  labels=["model", "instance", "state"])
        outstanding = GaugeMetricFamily("arena_gateway_instance_outstanding_requests",
                                        "requests the gateway has in flight on each instance",
                                        labels=["model", "instance"])
        probe = GaugeMetricFamily("arena_gateway_instance_probe_latency_seconds",
                                  "latency of the last health probe", labels=["model", "instance"])
        ready = GaugeMetricFamily("arena_gateway_model_ready_instances", "ready instances per model",
                                  labels=["model"])
        counts = {key: 0 for key in self.instances.models()}
        hidden = self.live_load_hidden()
        for inst in self.instances.all():
            for s in InstanceState:
                state.add_metric([inst.model, inst.instance_id, s.value], 1.0 if inst.state is s else 0.0)
            if not hidden:
                outstanding.add_metric([inst.model, inst.instance_id], inst.outstanding)
            if inst.last_probe_latency is not None:
                probe.add_metric([inst.model, inst.instance_id], inst.last_probe_latency)
            if inst.state is InstanceState.READY:
                counts[inst.model] = counts.get(inst.model, 0) + 1
        for model, count in counts.items():
            ready.add_metric([model], count)
        return [state, outstanding, probe, ready]


@dataclass(frozen=True, slots=True)
class RequestSample:
    """What one proxied request measured, for observers such as the admin analytics."""

    at: float                 # wall-clock time the answer finished
    model: str
    instance: str
    key_id: str | None
    status: int
    error: bool
    duration: float           # seconds, request to last byte
    ttft: float | None        # seconds to the first token (the instance's figure when it gave one)
    queue: float | None       # seconds waiting for a slot, when the instance reported it
    generation: float | None  # seconds from the first token to the last
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, *, ttft: float | None, duration: float, perf: dict[str, Any] | None, completion_tokens: int,
           **fields: Any) -> "RequestSample":
        """A sample from the gateway's own timings, replaced by the instance's `perf` figures
        where the request asked for them (the gateway's first chunk can be the role alone, before
        the prompt is read, so only the instance knows its first token)."""
        perf = perf or {}
        seconds = lambda name: perf[name] / 1000 if isinstance(perf.get(name), int | float) else None  # noqa: E731
        queue, instance_ttft, generation = seconds("queue_ms"), seconds("ttft_ms"), seconds("generation_ms")
        if generation is None and completion_tokens:
            generation = max(0.0, duration - (ttft or 0.0))
        return cls(at=time.time(), ttft=instance_ttft if instance_ttft is not None else ttft, duration=duration,
                   queue=queue, generation=generation, completion_tokens=completion_tokens, **fields)


class _AffinityCollector(Collector):
    """How the balancer's prefix affinity decided (balancers without it report nothing)."""

    def __init__(self, balancer: Any) -> None:
        self.balancer = balancer

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("arena_gateway_affinity_routing",
                                     "routing decisions of prefix affinity: hit (sent where its prefix is cached), "
                                     "overridden (that instance was much busier), new (no known prefix)",
                                     labels=["model", "outcome"])
        for (model, outcome), count in sorted(getattr(self.balancer, "outcomes", {}).items()):
            family.add_metric([model, outcome], count)
        return [family]


class GatewayMetrics:
    def __init__(self, instances: InstanceRegistry, balancer: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("arena_gateway_requests", "requests answered, by model, instance and status",
                                ["model", "instance", "endpoint", "status"], registry=r)
        self.errors = Counter("arena_gateway_errors", "errors, by model and type", ["model", "type"], registry=r)
        self.retries = Counter("arena_gateway_retries", "requests tried again on another instance",
                               ["model", "reason"], registry=r)
        self.latency = Histogram("arena_gateway_request_duration_seconds",
                                 "time from request to the last byte of the answer",
                                 ["model", "instance", "stream"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("arena_gateway_time_to_first_token_seconds",
                              "time from request to the first streamed chunk from the instance",
                              ["model", "instance"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("arena_gateway_tokens", "tokens, as reported in usage or counted from stream chunks",
                              ["model", "instance", "kind"], registry=r)
        self.instance_collector = _InstanceCollector(instances)
        r.register(self.instance_collector)
        if balancer is not None:
            r.register(_AffinityCollector(balancer))
        # Called with each finished request's `RequestSample`, off the answer's path; they must
        # not do I/O (the admin analytics sums in memory and writes periodically).
        self.observers: list[Callable[[RequestSample], None]] = []

    def observe(self, sample: RequestSample) -> None:
        for observer in self.observers:
            observer(sample)

    def error(self, model: str, kind: str) -> None:
        self.errors.labels(model, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
