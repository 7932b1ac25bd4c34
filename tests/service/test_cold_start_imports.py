"""`arena serve`'s cold start: what is imported before the model's load starts (the load then
overlaps the HTTP stack's imports), and what is never imported unless configured.

Each check runs a new interpreter, so it sees exactly what the import pulls in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Never on the way to ready unless used: OpenTelemetry's SDK and exporter (only when
# OTEL_EXPORTER_OTLP_ENDPOINT is set), the hub client (only for a hub: source), the
# llama-server engine and its httpx (only for that engine).
NEVER = ["opentelemetry.sdk", "opentelemetry.exporter", "huggingface_hub", "services.llama_server", "httpx"]
# After the model's load has started: the HTTP stack.
HTTP_STACK = ["fastapi", "starlette", "uvicorn", "prometheus_client"]


def imported_after(statements: str, names: list[str]) -> list[str]:
    code = f"import json, sys\n{statements}\nprint(json.dumps([n for n in {names!r} if n in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_serve_command_module_imports_neither_the_engine_nor_the_http_stack():
    assert imported_after("import services.cli", HTTP_STACK + NEVER + ["llama_cpp"]) == []


def test_the_model_load_starts_before_fastapi_uvicorn_and_prometheus_are_imported():
    statements = ("from shared.catalogue import load_catalogue\n"
                  "from services.settings import ServiceSettings\n"
                  "from services.instance import build_service\n"
                  "service = build_service(load_catalogue(), ServiceSettings(model='smollm2-135m', instance_id='t'))")
    assert imported_after(statements, HTTP_STACK + NEVER) == []


def test_the_whole_in_process_app_still_leaves_out_what_is_not_configured():
    statements = ("from shared.catalogue import load_catalogue\n"
                  "from services.settings import ServiceSettings\n"
                  "from services.app import create_app\n"
                  "create_app(load_catalogue(), ServiceSettings(model='smollm2-135m', instance_id='t'))")
    assert imported_after(statements, NEVER) == []
