"""Schemathesis against both apps' OpenAPI documents: every generated request, valid or not,
gets an answer the document describes (status, content type, schema), and never a 500.

`make test` runs a bounded number of cases per operation (FUZZ_EXAMPLES, default 8); `make
drills` runs many more. The gateway stands in front of two fake instances; the model service
is the real one, with answers kept short so that a case costs little model time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from shared.catalogue import env_key, load_catalogue
from tests.harness import ManagedProcess, free_port, local_models, start_gateway, start_service, wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]
MODELS = local_models(load_catalogue())
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def gateway_schema():
    fakes = []
    with tempfile.TemporaryDirectory(prefix="fuzz-gw-") as tmp:
        env = {"ARENA_GATEWAY_DB_PATH": str(Path(tmp) / "gw.sqlite3"), "ARENA_GATEWAY_HEALTH_INTERVAL": "0.2",
               "ARENA_GATEWAY_LOG_FORMAT": "json", "ARENA_REGISTRATION_TOKEN": "", "BASE_DOMAIN": ""}
        try:
            for model in MODELS:
                port = free_port()
                fake = ManagedProcess(f"fuzz-fake-{model}", ["--port", str(port), "--model", model], port,
                                      module="tests.fake_upstream")
                fakes.append(fake)
                fake.start().wait_ready("/health", timeout=30)
                env[f"{env_key(model)}_API_URL"] = fake.url
            gateway = start_gateway(env=env)
            try:
                wait_until(lambda: len(gateway_models(gateway)) == len(MODELS), what="both models ready")
                yield schemathesis.openapi.from_url(gateway.url + "/openapi.json")
            finally:
                gateway.stop(timeout=10)
        finally:
            for fake in fakes:
                fake.stop(timeout=5)


def gateway_models(gateway) -> list:
    import httpx
    return httpx.get(gateway.url + "/v1/models", timeout=5).json()["data"]


@pytest.fixture(scope="module")
def service_schema():
    service = start_service(MODELS[0], "--parallel", "2")
    try:
        yield schemathesis.openapi.from_url(service.url + "/openapi.json")
    finally:
        service.stop()


def check(case) -> None:
    if isinstance(case.body, dict):  # short answers: the fuzzing is of the HTTP layer, not the model
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(case.body.get(name), int) and case.body[name] > 4:
                case.body[name] = 4
        if "max_tokens" not in case.body and "max_completion_tokens" not in case.body:
            case.body["max_tokens"] = 4
    response = case.call(timeout=60)
    assert response.status_code != 500, f"{case.method} {case.path}: 500 {response.text[:500]}"
    case.validate_response(response, checks=CHECKS)


def fuzz(schema) -> None:
    """Every operation of `schema`, EXAMPLES cases each; the failures of all, together."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ_SETTINGS
        @given(case=operation.as_strategy())
        def one(case) -> None:
            check(case)

        try:
            one()
        except (AssertionError, FailureGroup) as exc:  # a 500, or what the document does not say
            failures.append(f"{operation.label}: {str(exc)[:800]}")
    assert not failures, "\n\n".join(failures)


def test_gateway_answers_as_documented(gateway_schema):
    fuzz(gateway_schema)


def test_model_service_answers_as_documented(service_schema):
    fuzz(service_schema)
