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


# After the model's load has started, beside it: the service's own modules, and what they bring
# (llama-cpp-python's high-level API with numpy and jinja2).
SERVICE_MODULES = ["services.generation", "services.engine", "numpy", "jinja2", "llama_cpp.llama"]


def test_the_model_load_starts_before_the_service_modules_and_the_http_stack_are_imported():
    # What `arena serve` imports before `start_service` starts the load: llama.cpp's bindings only.
    statements = ("from shared.catalogue import load_catalogue\n"
                  "from services.settings import ServiceSettings\n"
                  "from services.instance import start_service\n"
                  "from services.model_load import ModelLoad\n"
                  "import llama_cpp.llama_cpp")
    assert imported_after(statements, HTTP_STACK + NEVER + SERVICE_MODULES) == []


def test_start_service_hands_the_load_it_started_to_the_service():
    statements = ("from shared.catalogue import load_catalogue\n"
                  "from services.settings import ServiceSettings\n"
                  "from services.instance import start_service\n"
                  "catalogue, settings = load_catalogue(), ServiceSettings(model='smollm2-135m', instance_id='t')\n"
                  "service = start_service(catalogue, settings, settings.resolve(catalogue))\n"
                  "assert service._model_load is not None and service._model_load._thread is not None\n"
                  "service._loader.join(120)\n"
                  "assert service.status == 'ok', service.load_error\n"
                  "assert service.scheduler.ctx is service._model_load.result().context\n"
                  "service.shutdown()")
    assert imported_after(statements, HTTP_STACK + NEVER) == []


def test_the_package_of_the_bindings_is_whole_for_anyone_who_asks_for_more():
    # `services.llama_bindings` imports `llama_cpp.llama_cpp` without the package's __init__; the
    # first use of anything else completes the package.
    statements = ("import services.llama_bindings, sys\n"
                  "assert 'llama_cpp.llama' not in sys.modules\n"
                  "import llama_cpp\n"
                  "from llama_cpp import Llama, LlamaGrammar, __version__\n"
                  "assert llama_cpp.llama_backend_init is llama_cpp.llama_cpp.llama_backend_init\n"
                  "try:\n"
                  "    llama_cpp.no_such_name\n"
                  "    raise SystemExit('no AttributeError')\n"
                  "except AttributeError:\n"
                  "    pass")
    assert imported_after(statements, ["llama_cpp.llama", "numpy"]) == ["llama_cpp.llama", "numpy"]


def test_the_whole_in_process_app_still_leaves_out_what_is_not_configured():
    statements = ("from shared.catalogue import load_catalogue\n"
                  "from services.settings import ServiceSettings\n"
                  "from services.app import create_app\n"
                  "create_app(load_catalogue(), ServiceSettings(model='smollm2-135m', instance_id='t'))")
    assert imported_after(statements, NEVER) == []


def test_the_package_completes_once_for_threads_asking_together_and_again_after_a_failure():
    statements = ("import sys, threading\n"
                  "import services.llama_bindings\n"
                  "import llama_cpp\n"
                  # its __init__ fails while jinja2 cannot be imported: the error is raised, not lost
                  "sys.modules['jinja2'] = None\n"
                  "try:\n"
                  "    llama_cpp.Llama\n"
                  "    raise SystemExit('the failed __init__ was not reported')\n"
                  "except ImportError:\n"
                  "    pass\n"
                  "del sys.modules['jinja2']\n"
                  "errors = []\n"
                  "def use():\n"
                  "    try:\n"
                  "        from llama_cpp import Llama, __version__\n"
                  "    except Exception as exc:\n"
                  "        errors.append(repr(exc))\n"
                  "threads = [threading.Thread(target=use) for _ in range(8)]\n"
                  "[t.start() for t in threads]\n"
                  "[t.join() for t in threads]\n"
                  "assert errors == [], errors\n"
                  "assert '__getattr__' not in vars(llama_cpp)")
    assert imported_after(statements, ["llama_cpp.llama"]) == ["llama_cpp.llama"]
