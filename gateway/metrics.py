"""Prometheus metrics of the gateway, in a registry of its own (one per app)."""

from __future__ import annotations

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

    def error(self, model: str, kind: str) -> None:
        self.errors.labels(model, kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
