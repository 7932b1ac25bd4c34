"""`arena up`: the local fleet starts, serves through the gateway, and stops leaving nothing."""

from __future__ import annotations

import os
import signal

import pytest
from openai import OpenAI

from shared.catalogue import CatalogueError, load_catalogue
from shared.local_fleet import plan_instances
from tests.harness import ManagedProcess, free_port, wait_until


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if text.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def start_fleet() -> tuple[ManagedProcess, int]:
    gateway_port, model_port = free_port(), free_port()
    fleet = ManagedProcess("fleet", ["up", "--model", "smollm2-135m=1", "--port", str(gateway_port)], gateway_port,
                           env={"ARENA_MODEL_SMOLLM2_135M__PORT": str(model_port)})
    fleet.start()
    fleet.wait_ready("/health", timeout=240)  # the gateway's /health is 200 once a model is ready
    return fleet, model_port




def test_plan_follows_the_catalogue_or_the_selection():
    catalogue = load_catalogue()
    assert plan_instances(catalogue, None) == {k: s.instances for k, s in catalogue.models.items() if s.instances}
    assert plan_instances(catalogue, ["gemma3-270m=2"]) == {"gemma3-270m": 2}
    with pytest.raises(CatalogueError):
        plan_instances(catalogue, ["no-such-model"])


def test_fleet_serves_through_the_gateway_and_ctrl_c_stops_everything():
    fleet, model_port = start_fleet()
    try:
        client = OpenAI(base_url=fleet.url + "/v1", api_key="local", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["smollm2-135m"]
        answer = client.chat.completions.create(model="smollm2-135m", max_tokens=8,
                                                messages=[{"role": "user", "content": "Hello!"}])
        assert answer.choices[0].message.content
        assert processes_mentioning(f"--port\x00{model_port}")
        fleet.signal(signal.SIGINT)
        assert fleet.wait_exit(timeout=90) == 0
        assert "Stopped." in fleet.log_tail()
        assert wait_until(lambda: not processes_mentioning(f"--port\x00{model_port}"), 10)
        assert not processes_mentioning(f"--port\x00{fleet.port}")
    finally:
        fleet.stop()


def test_a_killed_supervisor_leaves_no_orphans():
    fleet, model_port = start_fleet()
    try:
        children = processes_mentioning(f"--port\x00{model_port}") + processes_mentioning(f"--port\x00{fleet.port}")
        assert len(children) >= 2
        os.kill(fleet.process.pid, signal.SIGKILL)
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") and
                                          open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in children), 60)
    finally:
        fleet.stop()

def test_two_instances_started_in_a_row_never_share_a_port(tmp_path):
    # The OS hands out a free port again as long as nobody has bound it, and a new instance binds
    # its port only once its process has imported everything: the picker replays what the OS may
    # answer (the same port twice), and the second start must still get a port of its own.
    from shared.local_fleet import LocalFleet

    first, second = free_port(), free_port()
    answers = iter([first, first, second])
    fleet = LocalFleet(load_catalogue(), {}, host="127.0.0.1", port=free_port(), log_dir=tmp_path, control=False,
                       port_picker=lambda host: next(answers))
    try:
        ports = [fleet.start_instance("smollm2-135m")["url"].rsplit(":", 1)[1] for _ in range(2)]
        assert ports == [str(first), str(second)]
        for member in fleet.instances:  # both really serve, each on its own port
            member.process.wait_ready("/health", timeout=240)
    finally:
        fleet.stop()
