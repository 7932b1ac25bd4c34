"""How the local fleet shares the machine's cores among its model processes (no timing here:
the speed it buys is measured by `arena bench pair`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.catalogue import load_catalogue
from shared.core_share import CoreShare, share_cores
from shared.local_fleet import LocalFleet


def test_cores_are_divided_among_automatic_instances_and_pinned_when_each_can_have_its_own():
    assert share_cores([None, None], [0, 1]) == [CoreShare(1, (0,), False), CoreShare(1, (1,), False)]
    assert share_cores([None], [0, 1, 2, 3]) == [CoreShare(4, (0, 1, 2, 3), False)]
    assert share_cores([None, None], [0, 1, 2, 3, 4]) == [CoreShare(2, (0, 1), False), CoreShare(2, (2, 3), False)]
    # The cores of a restricted affinity mask, not the first ones of the machine.
    assert share_cores([None, None], [4, 6]) == [CoreShare(1, (4,), False), CoreShare(1, (6,), False)]


def test_more_instances_than_cores_get_one_thread_each_unpinned_and_waiting_passively():
    shares = share_cores([None, None, None], [0, 1])
    assert shares == [CoreShare(1, None, True)] * 3
    assert shares[0].child_env() == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert share_cores([], [0, 1]) == []


def test_threads_set_in_the_catalogue_are_kept():
    assert share_cores([3, None], [0, 1, 2, 3]) == [CoreShare(3, (0, 1, 2), False), CoreShare(1, (3,), False)]
    # Oversubscribed by the catalogue's choice: kept, but nobody is pinned and nobody spins.
    assert share_cores([2, 2], [0, 1]) == [CoreShare(2, None, True), CoreShare(2, None, True)]
    assert share_cores([None, None], [0, 1])[0].child_env() == {}


def _fleet(tmp_path: Path, env: dict[str, str]) -> LocalFleet:
    catalogue = load_catalogue(environ=env)
    plan = {key: spec.instances for key, spec in catalogue.models.items() if spec.instances}
    return LocalFleet(catalogue, plan, host="127.0.0.1", port=8080, log_dir=tmp_path)


def _threads_arg(member) -> int:
    args = member.process.args
    return int(args[args.index("--threads") + 1])


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity masks on this platform")
def test_the_local_fleet_passes_each_model_process_its_share(tmp_path):
    fleet = _fleet(tmp_path, {})
    models = [m for m in fleet.members if m.process is not fleet.gateway]
    cores = len(os.sched_getaffinity(0))
    assert len(models) == 3  # the catalogue's two smollm2 instances and one gemma
    assert all(_threads_arg(m) == max(1, cores // 3) for m in models)
    assert [m.share for m in models] == share_cores([None] * 3, sorted(os.sched_getaffinity(0)))

    pinned = _fleet(tmp_path, {"ARENA_MODEL_GEMMA3_270M__THREADS": "3"})
    gemma = next(m for m in pinned.members if m.process.name == "gemma3-270m-0")
    assert _threads_arg(gemma) == 3
