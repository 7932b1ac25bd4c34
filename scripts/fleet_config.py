"""Files derived from the catalogue, and the catalogue facts the workflows need.

    python -m scripts.fleet_config write        # (re)generate the dispatcher and docker-compose.yml
    python -m scripts.fleet_config check        # exit 1 when a generated file is out of date
    python -m scripts.fleet_config cache-key M  # the actions/cache key of model M's GGUF file
    python -m scripts.fleet_config fetch M      # fetch model M into the model cache (cache first)
    python -m scripts.fleet_config matrix N [I] [--model M]
                                                # the JSON list of instance labels of a run (and
                                                # M checked against the catalogue and its overlay)

`cache-key` and `matrix` print `name=value` lines for $GITHUB_OUTPUT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import yaml

from shared.catalogue import Catalogue, ModelSpec, load_catalogue

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISPATCHER_PATH = PROJECT_ROOT / ".github" / "workflows" / "fleet.yml"
COMPOSE_PATH = PROJECT_ROOT / "docker-compose.yml"
MAX_INSTANCES = 3
GENERATED_NOTE = "# Generated from config/catalogue.yaml by `python -m scripts.fleet_config write`; do not edit.\n"


def model_cache_key(spec: ModelSpec) -> str:
    """Changes exactly when the model's file changes: its source and its checksum."""
    digest = hashlib.sha256(f"{spec.source}|{spec.sha256 or ''}".encode()).hexdigest()[:20]
    return f"gguf-{spec.key}-{digest}"


def instance_labels(instances: int, instance: str = "") -> list[str]:
    if instance:
        if not instance.isdigit() or not 1 <= int(instance) <= MAX_INSTANCES:
            raise ValueError(f"instance must be 1-{MAX_INSTANCES}, not {instance!r}")
        return [instance]
    if not 1 <= instances <= MAX_INSTANCES:
        raise ValueError(f"instances must be 1-{MAX_INSTANCES}, not {instances}")
    return [str(n) for n in range(1, instances + 1)]


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases for repeated values, lists indented under their key."""

    def ignore_aliases(self, data: object) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render_yaml(header: str, data: dict) -> str:
    """A generated file: comment lines, then `data` written by PyYAML (every value quoted as YAML
    needs, so a catalogue value can never change the file's structure)."""
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return GENERATED_NOTE + comments + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=4096,
                                                  default_flow_style=False, allow_unicode=True)


def _expr(name: str) -> str:
    return "${{ " + name + " }}"


def dispatcher_workflow(catalogue: Catalogue) -> str:
    inputs = {
        # A string, not a choice of the file's keys: GitHub refuses a choice outside its options,
        # and a model added at runtime lives in the overlay file (the plan job checks the key).
        "model": {"description": "Model to serve: a catalogue key (" + ", ".join(catalogue.models)
                                 + ", or one of config/catalogue.overlay.yaml)", "type": "string", "required": True},
        "instances": {"description": f"Instances of the model, 1-{MAX_INSTANCES} (a matrix)", "type": "choice",
                      "default": "1", "options": [str(n) for n in range(1, MAX_INSTANCES + 1)]},
        "instance": {"description": "One instance label only (set by a predecessor)", "type": "string",
                     "default": ""},
        "instance_id": {"description": "Registration id chosen by the predecessor", "type": "string",
                        "default": ""},
        "predecessor_id": {"description": "Instance id of the run this one replaces", "type": "string",
                           "default": ""},
        "duration_hours": {"description": "Hours before the hard limit; the successor starts a margin earlier",
                           "type": "string", "default": f"{catalogue.fleet.runner_duration_hours:g}"},
        "auto_restart": {"description": "Start a successor before the time is up", "type": "boolean",
                         "default": True},
    }
    workflow = {
        "name": "fleet",
        "run-name": "arena-fleet model=" + _expr("inputs.model") + " instance=" + _expr("inputs.instance || 'all'")
                    + " id=" + _expr("inputs.instance_id || '-'"),
        "on": {"workflow_dispatch": {"inputs": inputs}},
        "permissions": {"actions": "write", "contents": "read"},
        "jobs": {"inference": {
            "uses": "./.github/workflows/inference.yml",
            "with": {"model": _expr("inputs.model"), "instances": _expr("fromJSON(inputs.instances)"),
                     **{name: _expr(f"inputs.{name}") for name in
                        ("instance", "instance_id", "predecessor_id", "duration_hours", "auto_restart")}},
            "secrets": "inherit",
        }},
    }
    return render_yaml("The fleet's one dispatcher: `make fleet-up`, and every runner's successor, start a run here.\n"
                       "The run title carries the exact labels a run is found by (scripts/fleet_labels.py).",
                       workflow)


def _healthcheck(port: int, path: str, **extra: str) -> dict:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}')"
    return {"test": ["CMD", "python", "-c", probe], "interval": "10s", "timeout": "3s", "retries": 3, **extra}


def compose_file(catalogue: Catalogue) -> str:
    fleet = catalogue.fleet
    image = {"build": {"context": ".", "dockerfile": "Dockerfile"}, "image": "serverless-llm-arena:local"}
    token = "${ARENA_REGISTRATION_TOKEN:?set a registration token}"
    services: dict = {"gateway": {
        **image,
        "command": ["arena", "gateway", "--host", "0.0.0.0", "--port", str(fleet.gateway_port)],
        "environment": {"ARENA_REGISTRATION_TOKEN": token, "ARENA_FLEET__DATA_DIR": "/data"},
        "ports": [f"{fleet.gateway_port}:{fleet.gateway_port}"],
        "volumes": ["arena-data:/data"],
        "healthcheck": _healthcheck(fleet.gateway_port, "/health/live"),
    }}
    for key, spec in catalogue.models.items():
        services[key] = {
            **image,
            "profiles": [key],
            "command": ["arena", "runner", key, "--host", "0.0.0.0", "--port", str(spec.port), "--tunnel", "none",
                        "--successor", "none", "--no-auto-restart", "--duration-hours", "8760"],
            "environment": {"ARENA_GATEWAY_URL": f"http://gateway:{fleet.gateway_port}",
                            "ARENA_REGISTRATION_TOKEN": token,
                            "ARENA_RUNNER_PUBLIC_URL": f"http://{key}:{spec.port}",
                            "ARENA_FLEET__MODEL_CACHE_DIR": "/models"},
            "volumes": ["arena-models:/models"],
            "depends_on": {"gateway": {"condition": "service_healthy"}},
            "healthcheck": _healthcheck(spec.port, "/health", start_period="120s"),
        }
    return render_yaml("The gateway, plus one profile per model: `docker compose --profile smollm2-135m up`.\n"
                       "Instances register with the gateway like runners do (ARENA_REGISTRATION_TOKEN).\n"
                       "The same catalogue and gateway as the Actions fleet, on machines of your own.",
                       {"services": services, "volumes": {"arena-data": None, "arena-models": None}})


GENERATED = {DISPATCHER_PATH: dispatcher_workflow, COMPOSE_PATH: compose_file}


def stale_files(catalogue: Catalogue) -> list[Path]:
    return [path for path, render in GENERATED.items()
            if not path.is_file() or path.read_text() != render(catalogue)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.fleet_config")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("write")
    sub.add_parser("check")
    for name in ("cache-key", "fetch"):
        sub.add_parser(name).add_argument("model")
    matrix = sub.add_parser("matrix")
    matrix.add_argument("instances", type=int)
    matrix.add_argument("instance", nargs="?", default="")
    matrix.add_argument("--model", help="fail unless this is a model of the catalogue (with its overlay)")
    args = parser.parse_args(argv)
    # The file itself, not environment overrides: generated files must not depend on a shell.
    catalogue = load_catalogue(environ={}) if args.command in ("write", "check") else load_catalogue()

    if args.command == "write":
        for path, render in GENERATED.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(catalogue))
            print(f"wrote {path.relative_to(PROJECT_ROOT)}")
        return 0
    if args.command == "check":
        stale = stale_files(catalogue)
        for path in stale:
            print(f"{path.relative_to(PROJECT_ROOT)} is out of date with config/catalogue.yaml; "
                  "run `python -m scripts.fleet_config write`", file=sys.stderr)
        return 1 if stale else 0
    if args.command == "matrix":
        if args.model is not None:
            catalogue.model(args.model)  # an unknown key ends the run here, naming the known ones
        print(f"instances={json.dumps(instance_labels(args.instances, args.instance))}")
        return 0
    spec = catalogue.model(args.model)
    if args.command == "cache-key":
        print(f"key={model_cache_key(spec)}")
        print(f"path={catalogue.fleet.model_cache_path()}")
        # A GGUF inside an installed package or at a local path never enters the model cache.
        print(f"cacheable={'true' if spec.source.kind in ('gemma-chunks', 'hub') else 'false'}")
        return 0
    from shared.model_files import resolve_model_file

    print(f"model file: {resolve_model_file(spec, catalogue.fleet.model_cache_path(), progress=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
