"""Prefix-affinity balancing on plain objects: a conversation's next turn goes where its prefix
is cached, unless that instance is much busier; new conversations go to the least busy."""

from __future__ import annotations

import random

from gateway.balancing import make_balancer
from gateway.balancing.prefix_affinity import PrefixAffinityBalancer, block_hashes, prompt_text
from gateway.instances import Instance, InstanceState
from gateway.metrics import GatewayMetrics
from gateway.instances import InstanceRegistry
from shared.catalogue import load_catalogue


def _instances(count: int, slots: int = 8) -> list[Instance]:
    found = []
    for i in range(count):
        inst = Instance(instance_id=f"i{i}", model="m", url=f"http://127.0.0.1:{9000 + i}", state=InstanceState.READY)
        inst.slots_total = slots
        found.append(inst)
    return found


def _turn(document: str, *turns: str) -> dict:
    messages = [{"role": "system", "content": document}]
    for i, text in enumerate(turns):
        messages.append({"role": "user", "content": text})
        if i < len(turns) - 1:
            messages.append({"role": "assistant", "content": f"answer {i}"})
    return {"model": "m", "messages": messages}


def test_block_hashes_name_growing_prefixes():
    one, two = prompt_text(_turn("d" * 600, "q1")), prompt_text(_turn("d" * 600, "q1", "q2"))
    assert two.startswith(one)
    assert block_hashes(two, 256)[:len(block_hashes(one, 256))] == block_hashes(one, 256)
    assert block_hashes("x" * 255, 256) == []
    assert block_hashes("a" * 512, 256)[1] != block_hashes("b" * 256 + "a" * 256, 256)[1]  # chained
    assert prompt_text({"prompt": "abc"}) == "abc" and prompt_text(None) == ""


def test_next_turns_follow_their_prefix_and_new_conversations_spread():
    balancer = PrefixAffinityBalancer(rng=random.Random(1))
    instances = _instances(2)
    homes = {}
    for c in range(8):  # new conversations: the least busy each time
        chosen = balancer.choose(instances, _turn(f"document {c} " * 60, "first question"))
        chosen.outstanding += 1
        homes[c] = chosen
    assert [i.outstanding for i in instances] == [4, 4]
    for c in range(8):  # their next turns go home, though loads are equal
        assert balancer.choose(instances, _turn(f"document {c} " * 60, "first question", "next")) is homes[c]
    assert balancer.outcomes[("m", "new")] == 8 and balancer.outcomes[("m", "hit")] == 8


def test_a_much_busier_home_loses_to_the_least_busy_and_the_threshold_is_the_load_gap():
    balancer = PrefixAffinityBalancer(max_load_gap=0.5)
    home, other = _instances(2)
    body = _turn("shared document " * 40, "q")
    other.outstanding = 1
    assert balancer.choose([home, other], body) is home
    home.outstanding = 5     # load 5/8 against 1/8: a gap of exactly 0.5 still goes home
    assert balancer.choose([home, other], _turn("shared document " * 40, "q", "q2")) is home
    home.outstanding = 6     # 6/8 against 1/8: much busier
    chosen = balancer.choose([home, other], _turn("shared document " * 40, "q", "q2", "q3"))
    assert chosen is other and balancer.outcomes[("m", "overridden")] == 1
    # The prefix now lives on `other` too (most recently): the next turn follows it there.
    home.outstanding = 0
    assert balancer.choose([home, other], _turn("shared document " * 40, "q", "q2", "q3", "q4")) is other


def test_a_home_that_is_not_a_candidate_is_ignored_and_memory_is_bounded():
    balancer = PrefixAffinityBalancer(max_blocks=10)
    a, b = _instances(2)
    body = _turn("doc " * 200, "q")
    assert balancer.choose([a], body) is a
    b.outstanding = 3
    assert balancer.choose([b], body) is b           # a is not ready: b, though busier
    for c in range(20):
        balancer.choose([a, b], _turn(f"other {c} " * 100, "q"))
    assert len(balancer._owner) <= 10
    assert balancer.choose([a, b], {"model": "m", "messages": [{"role": "user", "content": "hi"}]}) is a


def test_it_is_the_default_and_its_decisions_are_in_the_metrics():
    balancer = make_balancer("prefix-affinity")
    assert isinstance(balancer, PrefixAffinityBalancer)
    metrics = GatewayMetrics(InstanceRegistry(load_catalogue()), balancer)
    a, b = _instances(2)
    balancer.choose([a, b], _turn("doc " * 200, "q"))
    balancer.choose([a, b], _turn("doc " * 200, "q", "q2"))
    text = metrics.render().decode()
    assert 'arena_gateway_affinity_routing_total{model="m",outcome="hit"} 1.0' in text
    assert 'arena_gateway_affinity_routing_total{model="m",outcome="new"} 1.0' in text
