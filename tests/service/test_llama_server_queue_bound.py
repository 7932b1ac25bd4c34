"""The llama-server engine's queue bound counts a request from its admission: a request whose
schema is still being converted to a grammar (a worker thread) holds its place, so requests
arriving meanwhile cannot pass the bound; every failure gives the place back. No child process:
the service's own `open_stream` runs, its conversion held at a gate the test opens, its client
pointed at a closed loopback port (the child's send fails as a dead child's would)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from services.exceptions import InferenceFailed, InvalidParameter, QueueFull
from services.generation import PreparedRequest
from services.llama_server import LlamaServerService
from services.sampling import SamplingParams
from shared.catalogue import load_catalogue
from tests.harness import free_port

SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}


class GatedConversion(LlamaServerService):
    """The real conversion, started only once the test opens the gate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.converting, self.gate = threading.Event(), threading.Event()

    def grammar_for(self, prepared):
        self.converting.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().grammar_for(prepared)


def service(tmp_path) -> GatedConversion:
    spec = load_catalogue(environ={}).models["smollm2-135m"].model_copy(update={"parallel": 1, "max_queue": 0})
    return GatedConversion(spec, instance_id="queue-bound", model_cache=tmp_path)


def request(response_format=None) -> PreparedRequest:
    return PreparedRequest(prompt_tokens=[1, 2, 3], params=SamplingParams(), response_format=response_format)


def closed_port_client(engine: LlamaServerService) -> None:
    """Nothing listens there: the send fails at once, as it would to a dead child."""
    engine._client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}")
    engine._client_loop = asyncio.get_running_loop()


def test_a_request_waiting_on_its_grammar_holds_its_place_in_the_bound(tmp_path):
    engine = service(tmp_path)

    async def scenario() -> None:
        closed_port_client(engine)
        first = asyncio.create_task(engine.open_stream(request(SCHEMA)))
        assert await asyncio.to_thread(engine.converting.wait, 30), "the conversion never started"
        assert engine.in_flight == 1
        with pytest.raises(QueueFull):   # one slot, no queue: the converting request has it
            await engine.open_stream(request())
        assert engine.rejected == 1
        engine.gate.set()
        with pytest.raises(InferenceFailed):   # the child's send fails: the place is given back
            await first
        assert engine.in_flight == 0
        await engine._client.aclose()

    asyncio.run(scenario())


def test_a_schema_that_fails_conversion_gives_its_place_back(tmp_path):
    engine = service(tmp_path)
    engine.gate.set()
    bad = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "object", "$ref": "#/nowhere"}}}

    async def scenario() -> None:
        closed_port_client(engine)
        with pytest.raises(InvalidParameter, match="not supported"):
            await engine.open_stream(request(bad))
        assert engine.in_flight == 0
        with pytest.raises(InferenceFailed):   # its place is free again: the next one is admitted
            await engine.open_stream(request())
        assert engine.in_flight == 0
        await engine._client.aclose()

    asyncio.run(scenario())
