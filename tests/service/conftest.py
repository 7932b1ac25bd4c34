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


ENGINES = ("llama-cpp-python", "llama-server")


def require_llama_server() -> None:
    """`make test` builds llama-server: without it the engine's tests fail (never skip) saying so."""
    from services.llama_server import find_binary

    binary = find_binary(None)
    if not binary.exists():
        pytest.fail(f"llama-server is not built ({binary} is missing): run `make install-test`, whose install "
                    "builds it (scripts/build_llama_server.sh)", pytrace=False)


@pytest.fixture(scope="package")
def smollm_server():
    """The same model and settings as `smollm`, decoded by a llama-server child."""
    require_llama_server()
    proc = start_service("smollm2-135m", "--engine", "llama-server", "--parallel", "4", "--max-queue", "4")
    yield proc
    proc.stop()


@pytest.fixture(scope="package", params=ENGINES)
def engine_service(request):
    """`smollm` on each engine in turn: the tests that take it run against both."""
    return request.getfixturevalue("smollm" if request.param == "llama-cpp-python" else "smollm_server")


@pytest.fixture(scope="package")
def gemma():
    proc = start_service("gemma3-270m", "--parallel", "2")
    yield proc
    proc.stop()


@pytest.fixture
def client(smollm) -> OpenAI:
    return OpenAI(base_url=smollm.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def gateway_in_front(tmp_path, gateways):
    """A real gateway whose only instance of smollm2-135m is the given service URL; returns an
    OpenAI client pointed at the gateway."""
    from tests.gateway.conftest import gateway_env, wait_ready

    def start(service_url: str) -> OpenAI:
        gateway = gateways(gateway_env(tmp_path, {"smollm2-135m": [service_url]}))
        wait_ready(gateway, "smollm2-135m-0", timeout=60)
        return OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=600)

    return start
