"""End to end through real model services (`arena serve`): the OpenAI SDK through the gateway,
and one of two instances killed under load."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import openai
import pytest

from tests.gateway.conftest import SMOL, gateway_env, instance_state, wait_ready
from tests.harness import start_service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services():
    started = []
    try:
        for _ in range(2):
            started.append(start_service(SMOL, "--parallel", "2", "--threads", "1"))
        yield started
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture
def fleet(tmp_path, services, gateways):
    gateway = gateways(gateway_env(tmp_path, {SMOL: [s.url for s in services]}))
    wait_ready(gateway, f"{SMOL}-0", f"{SMOL}-1", timeout=30)
    return gateway, services


def test_openai_sdk_through_the_gateway_to_real_services(fleet):
    gateway, services = fleet
    info = httpx.get(f"{gateway.url}/api/instances/{SMOL}-0", timeout=5).json()
    assert info["probe_mode"] == "details" and info["slots_total"] == 2
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert SMOL in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Say hi."}],
                                           max_tokens=8, temperature=0)
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Count to 3."}],
                                                 max_tokens=12, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    text = client.completions.create(model=SMOL, prompt="The sky is", max_tokens=6)
    assert text.choices[0].text


async def test_kill_a_real_instance_under_load(fleet):
    gateway, services = fleet
    url = gateway.url + "/v1/chat/completions"

    def body(stream: bool, max_tokens: int) -> dict:
        return {"model": SMOL, "stream": stream, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]}

    async def stream(client: httpx.AsyncClient, started: asyncio.Event) -> list[str]:
        async with client.stream("POST", url, json=body(True, 48)) as response:
            assert response.status_code == 200
            events = []
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    started.set()
            return events

    async with httpx.AsyncClient(timeout=180) as client:
        started = asyncio.Event()
        streams = [asyncio.create_task(stream(client, started)) for _ in range(4)]
        plain = [asyncio.create_task(client.post(url, json=body(False, 16))) for _ in range(6)]
        await asyncio.wait_for(started.wait(), 120)
        services[0].process.send_signal(signal.SIGKILL)
        late = [asyncio.create_task(client.post(url, json=body(False, 8))) for _ in range(4)]
        results = await asyncio.gather(*plain, *late)
        stream_results = await asyncio.gather(*streams)
    assert [r.status_code for r in results] == [200] * 10, [r.text for r in results if r.status_code != 200]
    for events in stream_results:
        assert events[-1] == "[DONE]"
        errors = [e for e in events[:-1] if e.startswith('{"error"')]
        assert not errors or json.loads(errors[0])["error"]["code"] == "upstream_stream_broken"
    assert instance_state(gateway, f"{SMOL}-0") == "unhealthy"
