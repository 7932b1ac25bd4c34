"""Static checks of the fleet's files: actionlint, generated files in sync with the catalogue,
inputs that the agents send matching the inputs the workflows declare, and docker-compose."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
import yaml

from scripts import fleet_config, gateway_runner, runner_agent
from scripts.successor import GitHubDispatcher, SuccessorRequest
from shared.catalogue import load_catalogue

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT = ROOT / ".venv" / "bin" / "actionlint"


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))     # YAML 1.1 reads the key `on` as True
    return data


def test_every_workflow_passes_actionlint():
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} >= {"inference.yml", "fleet.yml", "gateway.yml", "ci.yml"}
    done = subprocess.run([str(ACTIONLINT), "-no-color", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ inputs.nope }}\n")
    assert subprocess.run([str(ACTIONLINT), str(broken)], capture_output=True).returncode != 0


def test_generated_files_are_in_sync_with_the_catalogue():
    assert fleet_config.stale_files(load_catalogue(environ={})) == [], \
        "run `python -m scripts.fleet_config write`"


def test_dispatcher_offers_exactly_the_catalogue_models():
    inputs = workflow("fleet.yml")["on"]["workflow_dispatch"]["inputs"]
    assert inputs["model"]["options"] == list(load_catalogue(environ={}).models)
    assert inputs["duration_hours"]["default"] == "5.5"
    assert inputs["auto_restart"]["default"] is True
    assert inputs["instances"]["options"] == ["1", "2", "3"]


def test_the_successor_dispatch_sends_only_inputs_the_dispatcher_declares():
    declared = set(workflow("fleet.yml")["on"]["workflow_dispatch"]["inputs"])
    request = SuccessorRequest("smollm2-135m", "2", "smollm2-135m.2.x", "smollm2-135m.2.y", 0.5)
    sent = GitHubDispatcher(client=None, workflow="fleet.yml", ref="main").inputs(request)  # type: ignore[arg-type]
    assert set(sent) <= declared
    called = workflow("fleet.yml")["jobs"]["inference"]
    assert called["uses"] == "./.github/workflows/inference.yml"
    reusable = workflow("inference.yml")["on"]["workflow_call"]["inputs"]
    assert set(called["with"]) <= set(reusable)
    assert reusable["duration_hours"]["default"] == "5.5" and reusable["auto_restart"]["default"] is True


def test_gateway_handoff_inputs_match_the_gateway_workflow():
    declared = set(workflow("gateway.yml")["on"]["workflow_dispatch"]["inputs"])
    assert {"instance_id", "duration_hours", "auto_restart"} <= declared
    steps = [s.get("name") for s in workflow("gateway.yml")["jobs"]["gateway"]["steps"]]
    assert gateway_runner.READY_STEP in steps
    assert workflow("gateway.yml")["run-name"].startswith("arena-fleet model=gateway instance=1 id=")


def test_inference_caches_the_model_by_source_and_sha256():
    steps = workflow("inference.yml")["jobs"]["serve"]["steps"]
    restore = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache/restore"))
    save = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache/save"))
    assert restore["with"]["key"] == save["with"]["key"] == "${{ steps.model.outputs.key }}"
    assert "steps.model.outputs.cacheable == 'true'" in save["if"]
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "scripts.fleet_config", "cache-key", "gemma3-270m"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert dict(line.split("=", 1) for line in out.split())["cacheable"] == "true"
    spec = load_catalogue(environ={}).model("gemma3-270m")
    key = fleet_config.model_cache_key(spec)
    assert key.startswith("gguf-gemma3-270m-")
    assert fleet_config.model_cache_key(spec.model_copy(update={"sha256": "0" * 64})) != key
    assert fleet_config.model_cache_key(spec.model_copy(update={"source": load_catalogue(environ={}).model(
        "smollm2-135m").source})) != key


def test_matrix_labels():
    assert fleet_config.instance_labels(3) == ["1", "2", "3"]
    assert fleet_config.instance_labels(3, "2") == ["2"]
    for bad in ((0, ""), (4, ""), (1, "4"), (1, "x")):
        with pytest.raises(ValueError):
            fleet_config.instance_labels(*bad)


def test_compose_has_the_gateway_and_a_profile_per_model():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    catalogue = load_catalogue(environ={})
    services = compose["services"]
    assert set(services) == {"gateway", *catalogue.models}
    assert services["gateway"]["ports"] == [f"{catalogue.fleet.gateway_port}:{catalogue.fleet.gateway_port}"]
    assert (ROOT / services["gateway"]["build"]["dockerfile"]).is_file()
    for key, spec in catalogue.models.items():
        service = services[key]
        assert service["profiles"] == [key]
        assert service["depends_on"]["gateway"]["condition"] == "service_healthy"
        assert service["environment"]["ARENA_GATEWAY_URL"] == f"http://gateway:{catalogue.fleet.gateway_port}"
        command = service["command"]
        assert command[:3] == ["arena", "runner", key]
        # The command must parse with the runner's own argument parser.
        parser = argparse.ArgumentParser()
        runner_agent.add_arguments(parser)
        args = parser.parse_args(command[2:])
        assert args.port == spec.port and args.tunnel == "none" and args.successor == "none"
    # Every ${VAR} the compose file needs is explained by a :? message.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${ARENA_REGISTRATION_TOKEN:?" in text and "${ARENA_REGISTRATION_TOKEN}" not in text


def test_makefile_has_the_fleet_targets():
    text = (ROOT / "Makefile").read_text()
    for target in ("setup-tunnels", "fleet-up", "fleet-status", "fleet-down"):
        assert f"\n{target}:" in text
    dry = subprocess.run(["make", "-n", "setup-tunnels", "DOMAIN=example.com", "DRY_RUN=1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert "scripts.setup_tunnels example.com --dry-run" in dry.stdout, dry.stdout + dry.stderr
