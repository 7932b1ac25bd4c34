"""Models added from the hub at runtime, over HTTP: an in-process gateway, the local fake of the
hub (`tests.fake_hub`, real HTTP through huggingface-hub), a real SQLite store. Every bad input
is answered in OpenAI's error shape; downloads are bounded, single per model, cancellable; the
overlay survives a restart and its export loads as a catalogue."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
import yaml

from gateway.admin.audit import fingerprint
from shared.catalogue import load_catalogue
from tests.fake_hub import FakeHub, fake_gguf, serve_fake_hub
from tests.gateway.conftest import SMOL
from tests.harness import assert_openai_error, wait_until

ADMIN_KEY = "admin-secret-for-model-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
LIMIT = 8_000_000

TINY = "fake-org/Tiny-GGUF"
SPLIT = "fake-org/Split-GGUF"
BROKEN = "fake-org/Broken-Split-GGUF"
HUGE = "fake-org/Huge-GGUF"
LIAR = "fake-org/Liar-GGUF"
NOT_GGUF = "fake-org/NotGguf-GGUF"
SLOW = "fake-org/Slow-GGUF"
GATED = "fake-org/Gated-GGUF"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub()
    files = {
        (TINY, "Tiny-Q4_K_M.gguf"): fake_gguf(300_000, 1), (TINY, "Tiny-Q8_0.gguf"): fake_gguf(310_000, 2),
        (TINY, "README.md"): b"# tiny\n",
        (SPLIT, "Q4_K_M/Big-Q4_K_M-00001-of-00002.gguf"): fake_gguf(200_000, 3),
        (SPLIT, "Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf"): b"\x00" * 150_000,
        (BROKEN, "Big-Q4_K_M-00001-of-00003.gguf"): fake_gguf(1000, 4),
        (BROKEN, "Big-Q4_K_M-00003-of-00003.gguf"): fake_gguf(1000, 5),
        (HUGE, "Huge-Q4_K_M.gguf"): fake_gguf(1000, 6),
        (LIAR, "Liar-Q4_K_M.gguf"): fake_gguf(LIMIT + 500_000, 7),
        (NOT_GGUF, "Bad-Q4_K_M.gguf"): b"NOPE" + bytes(5000),
        (SLOW, "Slow-Q4_K_M.gguf"): fake_gguf(6_000_000, 8),
        (GATED, "Gated-Q4_K_M.gguf"): fake_gguf(1000, 10),
    }
    for (repo, path), content in files.items():
        fake.files[(repo, path)] = (content, not path.endswith(".md"))
    fake.gated.add(GATED)
    fake.listed_sizes[(HUGE, "Huge-Q4_K_M.gguf")] = 50 * 1024 ** 3
    fake.listed_sizes[(LIAR, "Liar-Q4_K_M.gguf")] = 1000
    with serve_fake_hub(fake):
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HOME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", fake.hub_url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setenv("ARENA_ADMIN_MAX_DOWNLOAD_BYTES", str(LIMIT))
        yield fake


@pytest.fixture
def gateway(hub, gateway_apps):
    return gateway_apps(admin_key=ADMIN_KEY)


def models(gateway) -> dict[str, dict]:
    return {m["id"]: m for m in gateway.get("/api/admin/models", headers=ADMIN).json()["data"]}


def finished(gateway, download_id: str, timeout: float = 30) -> dict:
    def state():
        body = gateway.get(f"/api/admin/downloads/{download_id}", headers=ADMIN).json()
        return body["state"] not in ("downloading", "verifying") and body
    return wait_until(state, timeout, what=f"download {download_id} to finish")


def blobs(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "hub-cache").rglob("blobs/*"))


def test_inspect_shows_the_file_and_its_size_before_any_download(gateway, hub):
    choice = gateway.post("/api/admin/models/inspect", json={"repo": TINY, "quant": "q8_0"}, headers=ADMIN).json()
    content = hub.files[(TINY, "Tiny-Q8_0.gguf")][0]
    assert choice["files"] == [{"path": "Tiny-Q8_0.gguf", "size": len(content),
                                "sha256": hashlib.sha256(content).hexdigest()}]
    assert choice["total_size"] == len(content) and choice["fits"] is True and choice["max_download_bytes"] == LIMIT
    assert choice["source"] == f"hub:{TINY}:Q8_0" and choice["suggested_key"] == "tiny-q8_0"
    assert any("/api/models/" in r.path for r in hub.seen("hub"))  # listed, not fetched:
    assert hub.seen("cdn") == [] and not any("/resolve/" in r.path for r in hub.seen())
    split = gateway.post("/api/admin/models/inspect", json={"repo": SPLIT, "quant": "Q4_K_M"}, headers=ADMIN).json()
    assert [f["path"].rsplit("-", 3)[-3] for f in split["files"]] == ["00001", "00002"]
    huge = gateway.post("/api/admin/models/inspect", json={"repo": HUGE, "quant": "Q4_K_M"}, headers=ADMIN).json()
    assert huge["fits"] is False


def test_a_model_is_downloaded_checked_and_added_to_the_catalogue(gateway, hub, tmp_path):
    started = gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q4_K_M", "display_name": "Tiny Q4",
                                                      "parallel": 2}, headers=ADMIN)
    assert started.status_code == 202, started.text
    download = started.json()
    assert download["model"] == "tiny-q4_k_m" and download["bytes_total"] == 300_000
    done = finished(gateway, download["id"])
    assert done["state"] == "done" and done["bytes_done"] == 300_000 and done["progress"] == 1.0, done
    model = models(gateway)["tiny-q4_k_m"]
    assert model["runtime"] is True and model["source"] == f"hub:{TINY}:Q4_K_M"
    assert model["display_name"] == "Tiny Q4" and model["settings"]["parallel"] == 2
    cached = next((tmp_path / "hub-cache").rglob("snapshots/*/Tiny-Q4_K_M.gguf"))
    assert cached.read_bytes() == hub.files[(TINY, "Tiny-Q4_K_M.gguf")][0]
    actions = [e["action"] for e in gateway.get("/api/admin/audit", headers=ADMIN).json()["data"]]
    assert actions[:2] == ["model.add", "model.download"]
    # The modes read the new catalogue too (their options list a model with a ready instance by
    # its catalogue entry; the name is what a session's transcript shows).
    assert gateway.app.state.modes.display_names["tiny-q4_k_m"] == "Tiny Q4"
    # The same model again: the key is taken.
    assert_openai_error(gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q4_K_M"}, headers=ADMIN),
                        409, "model_exists", "key")


def test_a_split_model_downloads_every_part(gateway, hub, tmp_path):
    download = gateway.post("/api/admin/models", json={"repo": SPLIT, "quant": "Q4_K_M", "key": "big"},
                            headers=ADMIN).json()
    done = finished(gateway, download["id"])
    assert done["state"] == "done" and done["bytes_done"] == 350_000, done
    assert len(list((tmp_path / "hub-cache").rglob("snapshots/*/Q4_K_M/Big-Q4_K_M-0000?-of-00002.gguf"))) == 2
    assert "big" in models(gateway)


BAD_ADDS = [
    ({"repo": "fake-org/nothing-here", "quant": "Q4_K_M"}, 404, "repository_not_found", "repo"),
    ({"repo": TINY, "quant": "Q5_K_M"}, 404, "quantisation_not_found", "quant"),
    ({"repo": BROKEN, "quant": "Q4_K_M"}, 422, "split_parts_missing", "quant"),
    ({"repo": HUGE, "quant": "Q4_K_M"}, 413, "download_too_large", "quant"),
    ({"repo": f"{TINY}@v9", "quant": "Q4_K_M"}, 404, "revision_not_found", "repo"),
    ({"repo": "no-slash", "quant": "Q4_K_M"}, 400, "invalid_value", "repo"),
    ({"repo": "../../etc/passwd", "quant": "Q4_K_M"}, 400, "invalid_value", "repo"),
    ({"repo": 5, "quant": "Q4_K_M"}, 400, "invalid_value", "repo"),
    ({"repo": TINY}, 400, "invalid_value", "quant"),
    ({"repo": TINY, "quant": "best"}, 400, "invalid_value", "quant"),
    ({"repo": TINY, "quant": "Q4_K_M", "key": "Bad Key"}, 400, "invalid_value", "key"),
    ({"repo": TINY, "quant": "Q4_K_M", "key": SMOL}, 409, "model_exists", "key"),
    ({"repo": TINY, "quant": "Q4_K_M", "parallel": 0}, 400, "invalid_value", "parallel"),
    ({"repo": TINY, "quant": "Q4_K_M", "port": 80}, 400, "invalid_value", "port"),
]


def test_bad_additions_are_refused_before_any_download(gateway, hub, tmp_path):
    for body, status, code, param in BAD_ADDS:
        error = assert_openai_error(gateway.post("/api/admin/models", json=body, headers=ADMIN), status, code, param)
        if code == "quantisation_not_found":
            assert "Tiny-Q4_K_M.gguf" in error["message"] and "Tiny-Q8_0.gguf" in error["message"]
        if code == "split_parts_missing":
            assert "split in 3 parts" in error["message"] and "[2]" in error["message"]
        if code == "download_too_large":
            assert str(LIMIT) in error["message"]
    assert hub.seen("cdn") == [] and blobs(tmp_path) == []
    assert_openai_error(gateway.post("/api/admin/models", content=b"{", headers=ADMIN), 400, "invalid_json")
    assert_openai_error(gateway.post("/api/admin/models/inspect", json=[1], headers=ADMIN), 400, "invalid_json")
    assert gateway.get("/api/admin/downloads", headers=ADMIN).json()["data"] == []


def test_a_stream_larger_than_the_limit_is_aborted(gateway, hub, tmp_path):
    download = gateway.post("/api/admin/models", json={"repo": LIAR, "quant": "Q4_K_M"}, headers=ADMIN).json()
    done = finished(gateway, download["id"])
    assert done["state"] == "failed" and "size limit" in done["error"], done
    assert done["bytes_done"] <= LIMIT  # refused on the size the CDN announced, before its body
    assert blobs(tmp_path) == [] and "liar-q4_k_m" not in models(gateway)


def test_a_gated_repository_is_listed_but_its_download_fails_clearly(gateway, hub, tmp_path):
    # As on the hub: anyone may list a gated repository's files; downloading needs granted access.
    download = gateway.post("/api/admin/models", json={"repo": GATED, "quant": "Q4_K_M"}, headers=ADMIN).json()
    done = finished(gateway, download["id"])
    assert done["state"] == "failed" and "gated" in done["error"] and "HF_TOKEN" in done["error"], done
    assert blobs(tmp_path) == [] and "gated-q4_k_m" not in models(gateway)


def test_a_file_that_is_not_gguf_is_refused_and_removed(gateway, hub, tmp_path):
    download = gateway.post("/api/admin/models", json={"repo": NOT_GGUF, "quant": "Q4_K_M"}, headers=ADMIN).json()
    done = finished(gateway, download["id"])
    assert done["state"] == "failed" and "not a GGUF file" in done["error"], done
    assert blobs(tmp_path) == [] and "notgguf-q4_k_m" not in models(gateway)


def test_one_download_per_model_and_cancel_removes_the_partial_file(gateway, hub, tmp_path):
    hub.chunk_size, hub.chunk_delay = 64 * 1024, 0.04   # about 4 s for the whole file
    first = gateway.post("/api/admin/models", json={"repo": SLOW, "quant": "Q4_K_M"}, headers=ADMIN).json()
    assert_openai_error(gateway.post("/api/admin/models", json={"repo": SLOW, "quant": "Q4_K_M"}, headers=ADMIN),
                        409, "download_in_progress", "model")
    assert_openai_error(gateway.post("/api/admin/models", json={"repo": SLOW, "quant": "Q4_K_M", "key": "other"},
                                     headers=ADMIN), 409, "download_in_progress")
    assert_openai_error(gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q8_0", "key": first["model"]},
                                     headers=ADMIN), 409, "download_in_progress")
    wait_until(lambda: gateway.get(f"/api/admin/downloads/{first['id']}", headers=ADMIN).json()["bytes_done"] > 0,
               10, what="the download under way")
    assert list((tmp_path / "hub-cache").rglob("*.incomplete"))  # a partial file while it runs
    # One an earlier, killed download of the repository left (its lock is free): cleaned with it.
    stale = next((tmp_path / "hub-cache").rglob("blobs")) / "0123abcd.9f8e7d6c.incomplete"
    stale.write_bytes(b"\0" * 1000)
    cancelled = gateway.delete(f"/api/admin/downloads/{first['id']}", headers=ADMIN)
    assert cancelled.status_code == 200
    done = finished(gateway, first["id"])
    assert done["state"] == "cancelled" and done["error"] is None and done["bytes_done"] < 6_000_000, done
    assert list((tmp_path / "hub-cache").rglob("*.incomplete")) == [] and blobs(tmp_path) == []
    assert "slow-q4_k_m" not in models(gateway)
    assert_openai_error(gateway.delete("/api/admin/downloads/dl_nope", headers=ADMIN), 404, "download_not_found")
    # Once cancelled, the model can be downloaded again.
    hub.chunk_delay = 0
    again = gateway.post("/api/admin/models", json={"repo": SLOW, "quant": "Q4_K_M"}, headers=ADMIN).json()
    assert finished(gateway, again["id"])["state"] == "done"


BAD_SETTINGS = [
    ({"n_ctx": 64}, "n_ctx"), ({"n_ctx": 10 ** 9}, "n_ctx"), ({"parallel": 0}, "parallel"),
    ({"parallel": 65}, "parallel"), ({"default_max_tokens": 0}, "default_max_tokens"),
    ({"default_max_tokens": 4000}, "default_max_tokens"), ({"max_tokens_limit": 3000}, "max_tokens_limit"),
    ({"battle_weight": -0.5}, "battle_weight"), ({"sampling": {"temperature": 2.5}}, "sampling.temperature"),
    ({"sampling": {"top_p": 1.5}}, "sampling.top_p"), ({"sampling": {"typo": 1}}, "sampling.typo"),
    ({"threads": 4}, "threads"), ({}, "body"), ({"n_ctx": "big"}, "n_ctx"),
]


REGISTRATION = {"Authorization": "Bearer registration-token-for-model-tests"}


def test_settings_are_validated_saved_and_survive_a_restart(hub, gateway_apps, tmp_path):
    gateway = gateway_apps(admin_key=ADMIN_KEY, registration_token="registration-token-for-model-tests")
    for body, param in BAD_SETTINGS:
        assert_openai_error(gateway.patch(f"/api/admin/models/{SMOL}/settings", json=body, headers=ADMIN),
                            400, "invalid_value", param)
    assert_openai_error(gateway.patch("/api/admin/models/nope/settings", json={"parallel": 2}, headers=ADMIN),
                        404, "model_not_found", "model")
    assert_openai_error(gateway.patch(f"/api/admin/models/{SMOL}/settings", content=b"x", headers=ADMIN), 400,
                        "invalid_json")
    changed = gateway.patch(f"/api/admin/models/{SMOL}/settings", json={
        "n_ctx": 4096, "parallel": 3, "default_max_tokens": 100, "max_tokens_limit": 2000,
        "sampling": {"temperature": 0.2, "top_k": 20}, "battle_weight": 0.5}, headers=ADMIN).json()
    assert changed["restart"] == "needed"  # nothing restarts instances in this gateway yet
    assert gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"battle_weight": 0.7},
                         headers=ADMIN).json()["restart"] == "not_needed"
    download = gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q8_0"}, headers=ADMIN).json()
    assert finished(gateway, download["id"])["state"] == "done"
    gateway.patch("/api/admin/models/tiny-q8_0/settings", json={"n_ctx": 1024, "max_tokens_limit": 512}, headers=ADMIN)
    # An instance of the runtime model may register like any other (and is restored after a restart).
    registered = gateway.post("/api/instances", headers=REGISTRATION, json={
        "model": "tiny-q8_0", "url": "http://127.0.0.1:9", "instance_id": "tiny-1", "ttl_seconds": 600})
    assert registered.status_code == 200, registered.text
    entry = gateway.get("/api/admin/audit", headers=ADMIN).json()["data"][0]
    assert entry["action"] == "model.settings" and entry["target"] == "tiny-q8_0"
    assert entry["actor"] == fingerprint(ADMIN_KEY)
    gateway.__exit__(None, None, None)

    restarted = gateway_apps(admin_key=ADMIN_KEY, registration_token="registration-token-for-model-tests")  # same store
    assert restarted.get("/api/instances/tiny-1").status_code == 200
    after = models(restarted)
    assert after[SMOL]["settings"] == {"n_ctx": 4096, "parallel": 3, "default_max_tokens": 100,
                                       "max_tokens_limit": 2000, "sampling": {"temperature": 0.2, "top_k": 20},
                                       "battle_weight": 0.7}
    assert after[SMOL]["overrides"]["parallel"] == 3 and after[SMOL]["runtime"] is False
    assert after["tiny-q8_0"]["runtime"] is True and after["tiny-q8_0"]["settings"]["n_ctx"] == 1024
    assert restarted.app.state.catalogue.models[SMOL].parallel == 3
    assert restarted.app.state.instances.is_known_model("tiny-q8_0")
    reset = restarted.delete(f"/api/admin/models/{SMOL}/settings", headers=ADMIN).json()
    assert reset["overrides"] == {} and reset["settings"]["parallel"] == load_catalogue().models[SMOL].parallel
    assert_openai_error(restarted.delete(f"/api/admin/models/{SMOL}", headers=ADMIN), 409, "not_a_runtime_model")
    # Not while an instance of it runs: a 409 that names it (the user unloads first).
    error = assert_openai_error(restarted.delete("/api/admin/models/tiny-q8_0", headers=ADMIN), 409,
                                "model_has_instances", "model")
    assert "tiny-1" in error["message"] and "action=unload" in error["message"]
    assert "tiny-q8_0" in models(restarted)
    secret = registered.json().get("registration_secret")
    left = restarted.delete("/api/instances/tiny-1", headers={
        **REGISTRATION, **({"X-Arena-Registration-Secret": secret} if secret else {})})
    assert left.status_code == 200, left.text
    assert restarted.delete("/api/admin/models/tiny-q8_0", headers=ADMIN).json()["deleted"] is True
    assert_openai_error(restarted.delete("/api/admin/models/tiny-q8_0", headers=ADMIN), 404, "model_not_found")


def test_export_is_the_effective_catalogue_in_its_own_format(gateway, hub, tmp_path):
    download = gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q4_K_M", "key": "tiny"},
                            headers=ADMIN).json()
    assert finished(gateway, download["id"])["state"] == "done"
    gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"sampling": {"min_p": 0.1}, "parallel": 5}, headers=ADMIN)
    response = gateway.get("/api/admin/catalogue.yaml", headers=ADMIN)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/yaml")
    assert "attachment" in response.headers["content-disposition"]
    raw = yaml.safe_load(response.text)
    assert raw["models"]["tiny"]["source"] == f"hub:{TINY}:Q4_K_M"
    assert raw["models"][SMOL]["parallel"] == 5 and raw["models"][SMOL]["sampling"] == {"min_p": 0.1}
    path = tmp_path / "catalogue.yaml"
    path.write_text(response.text)
    loaded = load_catalogue(path, environ={})
    assert loaded.models["tiny"] == gateway.app.state.catalogue.models["tiny"]
    assert loaded.models[SMOL].parallel == 5 and loaded.models[SMOL].sampling.min_p == 0.1
    assert set(loaded.models) == set(gateway.app.state.catalogue.models)


def test_every_model_api_needs_the_admin_key(gateway, hub):
    calls = [("get", "/api/admin/models", None), ("post", "/api/admin/models/inspect", {"repo": TINY, "quant": "Q8_0"}),
             ("post", "/api/admin/models", {"repo": TINY, "quant": "Q8_0"}), ("delete", "/api/admin/models/x", None),
             ("patch", f"/api/admin/models/{SMOL}/settings", {"parallel": 2}),
             ("delete", f"/api/admin/models/{SMOL}/settings", None), ("get", "/api/admin/downloads", None),
             ("get", "/api/admin/downloads/dl_1", None), ("delete", "/api/admin/downloads/dl_1", None),
             ("get", "/api/admin/catalogue.yaml", None)]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_KEY}"}):
        for method, path, body in calls:
            kwargs = {"json": body} if body is not None else {}
            assert_openai_error(getattr(gateway, method)(path, headers=headers, **kwargs), 401, "invalid_admin_key")
    assert hub.seen() == [] and models(gateway)[SMOL]["overrides"] == {}
    assert gateway.get("/admin/models").status_code == 200


def test_a_settings_change_is_handed_to_the_fleet_s_hook(gateway, hub):
    overlay = gateway.app.state.catalogue_overlay
    told: list[str] = []

    async def rolling_restart(key: str) -> None:
        told.append(key)

    overlay.on_settings_changed.append(rolling_restart)
    assert gateway.get("/api/arena/models").status_code == 200  # the arena made (lazily), with its weights
    answer = gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"parallel": 2}, headers=ADMIN).json()
    assert answer["restart"] == "rolling" and told == [SMOL]
    assert gateway.patch(f"/api/admin/models/{SMOL}/settings", json={"battle_weight": 2},
                         headers=ADMIN).json()["restart"] == "not_needed"
    assert told == [SMOL] and gateway.app.state.arena.battles.weights[SMOL] == 2
    assert gateway.delete(f"/api/admin/models/{SMOL}/settings", headers=ADMIN).json()["restart"] == "rolling"
    assert told == [SMOL, SMOL]


def test_a_downloaded_file_is_not_hashed_again_at_its_first_start(gateway, hub, tmp_path, monkeypatch):
    import shutil

    import shared.hub
    from shared.model_files import ModelFileError, resolve_model_file

    download = gateway.post("/api/admin/models", json={"repo": TINY, "quant": "Q4_K_M"}, headers=ADMIN).json()
    assert finished(gateway, download["id"])["state"] == "done"
    spec = gateway.app.state.catalogue.models["tiny-q4_k_m"]
    cache_dir = gateway.app.state.hub_downloads.config.cache_dir
    blob = next((tmp_path / "hub-cache").rglob("snapshots/*/Tiny-Q4_K_M.gguf")).resolve()
    hashed: list[str] = []
    real_sha256_of = shared.hub.sha256_of
    monkeypatch.setattr(shared.hub, "sha256_of", lambda path: hashed.append(str(path)) or real_sha256_of(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The service's check trusts the admin side's: the file is not read again.
    assert resolve_model_file(spec, cache_dir).resolve() == blob and hashed == []
    # Bytes replaced with the same size and modification time (cp -p, rsync -a): in place (a new
    # change time), or as a new file moved over it (a new inode). Both are hashed again, refused.
    stat = blob.stat()
    blob.write_bytes(b"GGUF" + bytes(stat.st_size - 4))
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(ModelFileError, match="sha256"):
        resolve_model_file(spec, cache_dir)
    assert len(hashed) == 1
    hub_bytes = hub.files[(TINY, "Tiny-Q4_K_M.gguf")][0]
    copy = blob.with_name("copy")
    copy.write_bytes(hub_bytes)
    shutil.copystat(blob, copy)
    os.replace(copy, blob)
    assert resolve_model_file(spec, cache_dir).resolve() == blob and len(hashed) == 2  # right bytes: hashed
    shared.hub.remember_verified(blob, spec.sha256, cache_dir, shared.hub.fingerprint(blob))
    staged = blob.with_name("staged")
    staged.write_bytes(b"GGUF" + bytes(stat.st_size - 4))
    shutil.copystat(blob, staged)
    os.replace(staged, blob)
    with pytest.raises(ModelFileError, match="sha256"):
        resolve_model_file(spec, cache_dir)


def test_a_file_changed_while_it_was_hashed_leaves_no_verified_marker(tmp_path):
    from shared.hub import fingerprint as file_fingerprint
    from shared.hub import remember_verified, verified_before

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF one")
    sha = hashlib.sha256(b"GGUF one").hexdigest()
    before = file_fingerprint(model)
    remember_verified(model, sha, tmp_path, before)
    assert verified_before(model, sha, tmp_path)
    model.write_bytes(b"GGUF two")  # written between the stat and the end of the hashing
    (tmp_path / "hub-verified" / f"{sha}.ok").unlink()
    remember_verified(model, sha, tmp_path, before)
    assert not verified_before(model, sha, tmp_path) and not (tmp_path / "hub-verified" / f"{sha}.ok").exists()


def test_two_downloads_at_once_give_two_models_two_ports(gateway, hub):
    hub.chunk_delay = 0.05  # both in flight together: each was given a port before either was added
    started = [gateway.post("/api/admin/models", json={"repo": TINY, "quant": quant}, headers=ADMIN).json()
               for quant in ("Q4_K_M", "Q8_0")]
    assert [finished(gateway, d["id"])["state"] for d in started] == ["done", "done"]
    catalogue = gateway.app.state.catalogue
    ports = [catalogue.models[key].port for key in ("tiny-q4_k_m", "tiny-q8_0")]
    assert len(set(ports)) == 2 and not set(ports) & {m.port for k, m in catalogue.models.items()
                                                       if k not in ("tiny-q4_k_m", "tiny-q8_0")}


def test_a_hung_hub_listing_holds_a_bounded_number_of_threads(hub, gateway_apps, monkeypatch):
    monkeypatch.setenv("ARENA_ADMIN_HUB_LIST_TIMEOUT", "0.3")
    monkeypatch.setenv("ARENA_ADMIN_MAX_HUB_LISTINGS", "2")
    gateway = gateway_apps(admin_key=ADMIN_KEY)
    hub.hung.add(SLOW)
    try:
        for _ in range(2):  # each waits its timeout, and its thread stays with the hung hub
            assert_openai_error(gateway.post("/api/admin/models/inspect", json={"repo": SLOW, "quant": "Q4_K_M"},
                                             headers=ADMIN), 502, "hub_unavailable", "repo")
        for repo in (SLOW, TINY):  # past the cap: refused at once, with no new thread
            response = gateway.post("/api/admin/models/inspect", json={"repo": repo, "quant": "Q4_K_M"}, headers=ADMIN)
            assert_openai_error(response, 503, "hub_busy", "repo")
            assert int(response.headers["Retry-After"]) >= 1
        assert sum(t.name.startswith("hub-list") for t in threading.enumerate()) == 2
    finally:
        hub.unhang.set()
    # Once the hub answers, the threads are free again.
    wait_until(lambda: gateway.post("/api/admin/models/inspect", json={"repo": TINY, "quant": "Q4_K_M"},
                                    headers=ADMIN).status_code == 200, 15, what="listings to work again")
    assert sum(t.name.startswith("hub-list") for t in threading.enumerate()) <= 2


def test_a_download_cut_by_a_killed_gateway_leaves_no_partial_file_after_a_restart(hub, tmp_path, gateways):
    import httpx

    hub.chunk_size, hub.chunk_delay = 64 * 1024, 0.05   # about 5 s for the whole file
    data = tmp_path / "data"
    env = {"ARENA_FLEET__DATA_DIR": str(data), "ARENA_FLEET__MODEL_CACHE_DIR": str(data / "models"),
           "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_ENDPOINT": hub.hub_url,
           "ARENA_GATEWAY_CATALOGUE_INSTANCES": "false", "ARENA_GATEWAY_ADMIN_KEY": ADMIN_KEY}
    first = gateways(env)
    download = httpx.post(first.url + "/api/admin/models", json={"repo": SLOW, "quant": "Q4_K_M"}, headers=ADMIN,
                          timeout=30).json()
    wait_until(lambda: httpx.get(f"{first.url}/api/admin/downloads/{download['id']}", headers=ADMIN).json()
               ["bytes_done"] > 0, 15, what="the download under way")
    first.kill()  # nothing of ours runs to clean up
    partials = list((tmp_path / "hub-cache").rglob("*.incomplete"))
    assert partials  # what a killed download leaves
    from shared.hub import PARTIAL_IDLE_SECONDS
    then = time.time() - PARTIAL_IDLE_SECONDS - 1  # not written since: dead, not written by another host
    for path in partials:
        os.utime(path, (then, then))
    # A file of another repository nobody journalled is not ours: it stays.
    other = tmp_path / "hub-cache" / "models--someone--else" / "blobs" / "abc.incomplete"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    second = gateways(env)
    wait_until(lambda: not any(p.exists() for p in partials), 15, what="the partial file removed")
    assert other.exists() and list((data / "models" / "hub-downloads").glob("*.json")) == []
    again = httpx.post(second.url + "/api/admin/models", json={"repo": TINY, "quant": "Q8_0"}, headers=ADMIN,
                       timeout=30).json()
    hub.chunk_delay = 0
    wait_until(lambda: httpx.get(f"{second.url}/api/admin/downloads/{again['id']}", headers=ADMIN).json()
               ["state"] == "done", 30, what="a new download done")
