"""The `arena` command line loads the catalogue once, from `--catalogue`, `ARENA_CATALOGUE` or the
bundled file, passes it to the command, and hands the same file to the processes it starts."""

from __future__ import annotations

import json

import yaml

from shared.cli import main as arena
from shared.local_fleet import LocalFleet
from tests.harness import PROJECT_ROOT


def other_catalogue(tmp_path):
    raw = yaml.safe_load((PROJECT_ROOT / "config" / "catalogue.yaml").read_text())
    raw["models"]["smollm2-135m"]["display_name"] = "Renamed SmolLM"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_catalogue_comes_from_the_option_then_the_environment(tmp_path, capsys, monkeypatch):
    path = other_catalogue(tmp_path)
    monkeypatch.delenv("ARENA_CATALOGUE", raising=False)
    assert arena(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["smollm2-135m"]["display_name"] != "Renamed SmolLM"
    assert arena(["--catalogue", str(path), "models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["smollm2-135m"]["display_name"] == "Renamed SmolLM"
    monkeypatch.setenv("ARENA_CATALOGUE", str(path))
    assert arena(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["smollm2-135m"]["display_name"] == "Renamed SmolLM"


def test_a_catalogue_that_cannot_be_read_is_a_clear_error(tmp_path, capsys):
    assert arena(["--catalogue", str(tmp_path / "missing.yaml"), "models"]) == 2
    assert "cannot read the catalogue" in capsys.readouterr().err


def test_the_local_fleet_hands_its_catalogue_to_every_process(tmp_path):
    from shared.catalogue import load_catalogue

    catalogue = load_catalogue(other_catalogue(tmp_path))
    fleet = LocalFleet(catalogue, {"smollm2-135m": 1}, host="127.0.0.1", port=1, log_dir=tmp_path)
    for member in fleet.members:
        assert member.process.args[:2] == ["--catalogue", str(tmp_path / "other.yaml")]
