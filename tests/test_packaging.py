"""The project works installed from its wheel, away from the checkout: the catalogue comes from
the package data, data goes to the user's data folder, and every import is declared."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.harness import PROJECT_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(PROJECT_ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (found,) = out.glob("serverless_llm_arena-*.whl")
    return found


def test_the_wheel_ships_the_catalogue_and_declares_its_imports(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert "shared/catalogue.yaml" in names
        assert archive.read("shared/catalogue.yaml") == (PROJECT_ROOT / "config" / "catalogue.yaml").read_bytes()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(archive.read(metadata)).get_all("Requires-Dist")
    declared = {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for r in requires}
    for module, dist in {"numpy": "numpy", "platformdirs": "platformdirs", "yaml": "pyyaml", "fastapi": "fastapi",
                         "starlette": "starlette", "httpx": "httpx", "uvicorn": "uvicorn", "jinja2": "jinja2"}.items():
        assert dist in declared, (module, declared)


def test_arena_models_runs_from_the_installed_wheel_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    env.pop("ARENA_CATALOGUE", None)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*code: str) -> str:
        result = subprocess.run([sys.executable, *code], cwd=work, env=env, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    listed = json.loads(run("-m", "shared.cli", "models", "--json"))
    assert "smollm2-135m" in listed and listed["smollm2-135m"]["port"] > 0
    # The store's migrations are data files of the package: the installed gateway can build its store.
    run("-m", "shared.cli", "db", "upgrade")
    assert (tmp_path / "xdg-data" / "serverless-llm-arena" / "gateway.sqlite3").stat().st_size > 0
    where = json.loads(run("-c", "import json, shared, shared.paths as p; from shared.catalogue import load_catalogue;"
                                 "c = load_catalogue(); print(json.dumps([shared.__file__, str(c.path),"
                                 " str(c.fleet.data_path()), str(p.log_dir('fleet'))]))"))
    # The leaderboard's method page renders from the package's own copy of its text.
    method = json.loads(run("-c", "import asyncio, json, gateway; from gateway.arena.routes import leaderboard_method;"
                                  " print(json.dumps([gateway.__file__, asyncio.run(leaderboard_method()).body.decode()]))"))
    assert Path(method[0]).is_relative_to(target)
    assert "<h1>How the leaderboard is made</h1>" in method[1] and "upper bound" in method[1]
    package, catalogue, data, logs = (Path(p) for p in where)
    assert package.is_relative_to(target) and catalogue == target / "shared" / "catalogue.yaml"
    assert data == tmp_path / "xdg-data" / "serverless-llm-arena"
    assert logs.is_relative_to(tmp_path / "xdg-cache" / "serverless-llm-arena")
