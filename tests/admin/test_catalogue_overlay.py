"""The catalogue overlay as a plain class on a real store, SQLite then PostgreSQL: runtime models
and settings overrides validated with the catalogue's types, kept across a reload (a gateway's
restart), the hooks told, and the export loading back as a catalogue."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.admin.catalogue_overlay import (
    CatalogueOverlay,
    InvalidSetting,
    ModelExists,
    NotARuntimeModel,
    UnknownModel,
)
from shared.catalogue import load_catalogue
from tests.harness import PROJECT_ROOT

BASE = load_catalogue()
SMOL = "smollm2-135m"


@pytest.fixture
def store(database):
    """A migrated store on SQLite, then on PostgreSQL (the suite's throwaway cluster)."""
    return database


async def fresh(db) -> CatalogueOverlay:
    overlay = CatalogueOverlay(BASE, db)
    await overlay.load()
    return overlay


async def test_runtime_model_and_overrides_survive_a_reload(store):
    overlay = await fresh(store)
    spec = overlay.new_model_spec({"key": "tiny-q4_k_m", "display_name": "Tiny", "source": "hub:org/tiny-GGUF:Q4_K_M",
                                   "sha256": "a" * 64})
    assert spec.port == max(m.port for m in BASE.models.values()) + 1 and spec.hostname == "tiny-q4_k_m"
    await overlay.add_model(spec)
    updated, restart = await overlay.update_settings(SMOL, {"n_ctx": 4096, "sampling": {"temperature": 0.3}})
    assert restart and updated.n_ctx == 4096 and updated.sampling.temperature == 0.3
    _, restart = await overlay.update_settings(SMOL, {"battle_weight": 2.5})
    assert not restart  # the gateway applies a weight at once

    again = await fresh(store)
    catalogue = again.effective_catalogue()
    assert set(catalogue.models) == set(BASE.models) | {"tiny-q4_k_m"}
    assert str(catalogue.models["tiny-q4_k_m"].source) == "hub:org/tiny-GGUF:Q4_K_M"
    smol = again.model_spec(SMOL)
    assert (smol.n_ctx, smol.sampling.temperature, smol.battle_weight) == (4096, 0.3, 2.5)
    assert smol.parallel == BASE.models[SMOL].parallel
    assert again.overrides(SMOL) == {"n_ctx": 4096, "sampling": {"temperature": 0.3}, "battle_weight": 2.5}
    assert BASE.models[SMOL].n_ctx == 2048  # the base itself is untouched


async def test_settings_back_to_the_base_leave_no_override(store):
    overlay = await fresh(store)
    await overlay.update_settings(SMOL, {"parallel": 2})
    await overlay.update_settings(SMOL, {"parallel": BASE.models[SMOL].parallel})
    assert overlay.overrides(SMOL) == {}
    await overlay.update_settings(SMOL, {"sampling": {"top_k": 20, "temperature": 0.5}})
    await overlay.update_settings(SMOL, {"sampling": {"top_k": None}})  # null clears one field
    assert overlay.model_spec(SMOL).sampling.given() == {"temperature": 0.5}
    await overlay.reset_settings(SMOL)
    assert (await fresh(store)).model_spec(SMOL) == BASE.models[SMOL]


BAD_SETTINGS = [
    ({"n_ctx": 64}, "n_ctx"), ({"n_ctx": 10 ** 9}, "n_ctx"), ({"parallel": 0}, "parallel"), ({"parallel": 65}, "parallel"),
    ({"n_ctx": "big"}, "n_ctx"), ({"default_max_tokens": 0}, "default_max_tokens"),
    ({"default_max_tokens": 2000}, "default_max_tokens"), ({"max_tokens_limit": 4096}, "max_tokens_limit"),
    ({"battle_weight": -1}, "battle_weight"), ({"battle_weight": 1000}, "battle_weight"),
    ({"sampling": {"temperature": 3}}, "sampling.temperature"), ({"sampling": {"top_p": 0}}, "sampling.top_p"),
    ({"sampling": {"mirostat": 1}}, "sampling.mirostat"), ({"sampling": 5}, "sampling"),
    ({"port": 1}, "port"), ({}, "body"),
]


async def test_out_of_range_settings_are_refused_naming_the_field(store):
    overlay = await fresh(store)
    for changes, param in BAD_SETTINGS:
        with pytest.raises(InvalidSetting) as caught:
            await overlay.update_settings(SMOL, changes)
        assert caught.value.param == param, (changes, caught.value)
    assert overlay.overrides(SMOL) == {} and (await fresh(store)).model_spec(SMOL) == BASE.models[SMOL]
    with pytest.raises(UnknownModel):
        await overlay.update_settings("nope", {"parallel": 2})


async def test_keys_are_checked_and_base_models_cannot_be_removed(store):
    overlay = await fresh(store)
    for key in ("", "Upper", "a b", "../x", "x" * 64, 5):
        with pytest.raises(InvalidSetting):
            overlay.new_model_spec({"key": key, "source": "hub:o/r:Q8_0"})
    with pytest.raises(ModelExists):
        overlay.new_model_spec({"key": SMOL, "source": "hub:o/r:Q8_0"})
    with pytest.raises(InvalidSetting) as caught:
        overlay.new_model_spec({"key": "x", "source": "hub:o/r:Q8_0", "parallel": 100})
    assert caught.value.param == "parallel"
    with pytest.raises(NotARuntimeModel):
        await overlay.remove_model(SMOL)
    await overlay.add_model(overlay.new_model_spec({"key": "x", "source": "hub:o/r:Q8_0"}))
    await overlay.remove_model("x")
    assert "x" not in (await fresh(store)).effective_catalogue().models


async def test_a_new_model_s_port_is_after_every_model_s_whole_range(store):
    """A model with port P and `instances: N` uses P..P+N-1 in the local plan: the next runtime
    model starts after it, and a spec made before it was added is moved past its range."""
    overlay = await fresh(store)
    wide = overlay.new_model_spec({"key": "wide", "source": "hub:o/r:Q8_0", "instances": 3})
    late = overlay.new_model_spec({"key": "late", "source": "hub:o/r:Q8_0"})  # made at once: the same port
    assert late.port == wide.port
    wide = await overlay.add_model(wide)
    assert overlay.new_model_spec({"key": "next", "source": "hub:o/r:Q8_0"}).port == wide.port + 3
    assert (await overlay.add_model(late)).port == wide.port + 3


async def test_hooks_hear_of_changes(store):
    overlay = await fresh(store)
    restarted: list[str] = []
    seen: list[set[str]] = []

    async def restart(key: str) -> None:
        restarted.append(key)

    async def broken(key: str) -> None:
        raise RuntimeError("the fleet is down")

    overlay.on_settings_changed += [broken, restart]
    overlay.on_catalogue_changed.append(lambda catalogue: seen.append(set(catalogue.models)))
    assert not overlay.restart_needed()
    await overlay.update_settings(SMOL, {"battle_weight": 0})
    assert restarted == []
    await overlay.update_settings(SMOL, {"max_tokens_limit": 512})
    assert restarted == [SMOL] and overlay.model_spec(SMOL).max_tokens_limit == 512  # saved despite the broken hook
    await overlay.add_model(overlay.new_model_spec({"key": "x", "source": "hub:o/r:Q8_0"}))
    assert seen[-1] == set(BASE.models) | {"x"}


async def test_a_row_the_base_no_longer_accepts_is_left_out(store, tmp_path):
    overlay = await fresh(store)
    await overlay.add_model(overlay.new_model_spec({"key": "x", "source": "hub:o/r:Q8_0"}))
    await overlay.update_settings(SMOL, {"parallel": 3})
    narrower = BASE.model_copy(update={"models": {k: m for k, m in BASE.models.items() if k != SMOL}})
    reloaded = CatalogueOverlay(narrower, store)
    await reloaded.load()
    assert SMOL in reloaded.skipped and "x" in reloaded.effective_catalogue().models


async def test_export_loads_as_the_effective_catalogue(store, database_url, tmp_path):
    base = load_catalogue(environ={})
    overlay = CatalogueOverlay(base, store)
    await overlay.load()
    await overlay.add_model(overlay.new_model_spec({"key": "tiny-q8_0", "display_name": "Tiny", "source": "hub:o/tiny:Q8_0",
                                                    "parallel": 2, "sampling": {"temperature": 0.2}}))
    await overlay.update_settings(SMOL, {"n_ctx": 4096, "sampling": {"top_p": 0.9}})
    text = overlay.export_yaml()
    assert text.startswith("# The effective catalogue") and "tiny-q8_0" in text.splitlines()[1]
    path = tmp_path / "exported.yaml"
    path.write_text(text)
    loaded = load_catalogue(path, environ={})
    assert loaded.models == overlay.effective_catalogue().models
    assert loaded.models[SMOL].n_ctx == 4096 and loaded.models[SMOL].sampling.top_p == 0.9
    assert loaded.fleet == base.fleet and loaded.routing == base.routing and loaded.arena == base.arena
    # The command line writes the same text from the store.
    done = subprocess.run([sys.executable, "-m", "shared.cli", "catalogue", "export", "--database-url",
                           database_url, str(tmp_path / "cli.yaml")], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cli.yaml").read_text() == text


async def test_a_reload_publishes_only_what_changed(store):
    overlay = await fresh(store)
    published = []
    overlay.on_catalogue_changed.append(published.append)
    await overlay.load()  # the periodic refresh with nothing new: the published catalogue stands
    assert published == []
    await overlay.update_settings(SMOL, {"battle_weight": 2.5})
    assert len(published) == 1
    other = await fresh(store)  # another replica's change, seen at this one's next refresh
    await other.update_settings(SMOL, {"battle_weight": 3.0})
    await overlay.load()
    assert len(published) == 2 and published[-1].models[SMOL].battle_weight == 3.0
    await overlay.load()
    assert len(published) == 2


async def test_two_gateways_changing_one_model_at_once_both_succeed(store):
    """Two gateways on one store save the same model's overrides at the same moment, many times:
    every change is saved (none fails on the key being taken meanwhile), and a reload shows the
    last one written."""
    import asyncio

    first, second = await fresh(store), await fresh(store)
    for n in range(12):
        await asyncio.gather(first.update_settings(SMOL, {"battle_weight": 1 + n}),
                             second.update_settings(SMOL, {"battle_weight": 50 + n}),
                             first.add_model(first.new_model_spec({"key": f"m{n}", "source": "hub:o/r:Q8_0"})),
                             second.update_settings(SMOL, {"parallel": 2 + n % 3}))
    reloaded = await fresh(store)
    assert reloaded.model_spec(SMOL).battle_weight in (12, 61)
    assert {f"m{n}" for n in range(12)} <= set(reloaded.effective_catalogue().models)
    assert reloaded.skipped == {}


async def test_the_overlay_file_merged_by_the_loader_gives_the_effective_catalogue(store, tmp_path):
    """What the runners on Actions read: the catalogue file with the published overlay file merged
    by `load_catalogue` (ARENA_CATALOGUE_OVERLAY) is the gateway's effective catalogue."""
    from shared.catalogue import OVERLAY_ENV

    base = load_catalogue(environ={})
    overlay = CatalogueOverlay(base, store)
    await overlay.load()
    empty = overlay.overlay_yaml()
    await overlay.add_model(overlay.new_model_spec({"key": "tiny-q8_0", "source": "hub:o/tiny:Q8_0", "parallel": 2}))
    await overlay.update_settings(SMOL, {"n_ctx": 4096, "sampling": {"top_p": 0.9}})
    await overlay.update_settings(SMOL, {"sampling": {"top_p": None, "temperature": 0.4}})
    text = overlay.overlay_yaml()
    assert text != empty and text == (await fresh(store)).overlay_yaml()  # same overlay, same bytes
    path = tmp_path / "catalogue.overlay.yaml"
    path.write_text(text)
    merged = load_catalogue(environ={OVERLAY_ENV: str(path)})
    assert merged.models == overlay.effective_catalogue().models
    assert merged.models[SMOL].sampling.given() == {"temperature": 0.4}  # sampling replaced as a whole
    # The environment still has the last word over the overlay.
    env = load_catalogue(environ={OVERLAY_ENV: str(path), "ARENA_MODEL_SMOLLM2_135M__N_CTX": "1024"})
    assert env.models[SMOL].n_ctx == 1024


async def test_two_gateways_starting_on_one_fresh_store_import_the_published_overlay_once(store, database_url):
    """Both find the store empty at start; one imports (its keys), the other finds those rows in
    the same transaction and imports nothing (None: no second audit entry), many times over."""
    import asyncio

    from gateway.store import Database
    from gateway.store.schema import catalogue_overlay

    published = {"models": {SMOL: {"n_ctx": 1024},
                            "smol-copy": {"display_name": "Copy", "source": str(BASE.models[SMOL].source),
                                          "port": 8190, "hostname": "smol-copy", "instances": 0}}}
    other = Database(database_url)   # the second gateway's own engine, as a separate process has
    try:
        for _ in range(5):
            async with store.write() as conn:
                await conn.execute(catalogue_overlay.delete())
            first, second = await fresh(store), await fresh(other)
            results = await asyncio.gather(first.import_published(published, source="repo"),
                                           second.import_published(published, source="repo"))
            assert sorted(results, key=lambda r: r is None) == [[SMOL, "smol-copy"], None]
            again = await fresh(store)
            assert again.overrides(SMOL) == {"n_ctx": 1024} and again.runtime_models() == ["smol-copy"]
    finally:
        await other.dispose()
