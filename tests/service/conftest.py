"""Real model service processes, shared by the tests of a module (they take seconds to load)."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.harness import start_service


@pytest.fixture(scope="package")
def smollm():
    """SmolLM2 with 4 slots and a small queue, so the overflow test can fill it quickly."""
    proc = start_service("smollm2-135m", "--parallel", "4", "--max-queue", "4")
    yield proc
    proc.stop()


@pytest.fixture(scope="package")
def gemma():
    proc = start_service("gemma3-270m", "--parallel", "2")
    yield proc
    proc.stop()


@pytest.fixture
def client(smollm) -> OpenAI:
    return OpenAI(base_url=smollm.url + "/v1", api_key="unused", max_retries=0, timeout=120)
