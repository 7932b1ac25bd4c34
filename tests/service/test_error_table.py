"""The model service's layers: domain code raises plain exceptions, one table at the edge maps
each to its OpenAI error."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services import exceptions
from services.errors import SERVICE_ERRORS
from shared.errors import ApiError, DomainError

SERVICES = Path(__file__).resolve().parents[2] / "services"


@pytest.mark.parametrize("module", ["engine", "generation", "sampling", "chat_template", "exceptions"])
def test_domain_modules_know_nothing_of_http(module):
    tree = ast.parse((SERVICES / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.split(".")[0] in ("fastapi", "starlette")}, imported
    assert "shared.errors.ApiError" not in imported


def test_every_domain_exception_has_an_entry():
    raised = [cls for cls in vars(exceptions).values()
              if isinstance(cls, type) and issubclass(cls, DomainError) and cls is not DomainError]
    for cls in raised:
        assert cls in SERVICE_ERRORS.specs, cls


@pytest.mark.parametrize("exc, status, code, param, retry_after", [
    (exceptions.QueueFull(retry_after=3), 503, "queue_full", None, "3"),
    (exceptions.Draining(), 503, "draining", None, "1"),
    (exceptions.ModelLoading(), 503, "model_loading", None, "2"),
    (exceptions.ModelNotFound("gpt-9"), 404, "model_not_found", "model", None),
    (exceptions.ContextTooLong(2048, 4000), 400, "context_length_exceeded", "messages", None),
    (exceptions.InvalidParameter("bad stop", param="stop"), 400, "invalid_value", "stop", None),
    (exceptions.UnsupportedParameter("echo is not supported", param="echo"), 400, "unsupported_parameter", "echo",
     None),
    (exceptions.InferenceFailed("decode failed"), 500, "inference_error", None, None),
])
def test_the_table_answers_in_openai_shape(exc, status, code, param, retry_after):
    error = SERVICE_ERRORS.api_error(exc)
    assert isinstance(error, ApiError) and error.status == status
    assert error.body() == {"error": {"message": str(exc), "type": error.type, "param": param, "code": code}}
    assert error.type == {400: "invalid_request_error", 404: "not_found_error", 500: "server_error",
                          503: "service_unavailable"}[status]
    assert error.headers.get("Retry-After") == retry_after


def test_an_unmapped_exception_is_an_internal_error_without_details():
    error = SERVICE_ERRORS.api_error(RuntimeError("secret path /home/x"))
    assert error.status == 500 and error.code == "internal_error" and "secret" not in error.message
