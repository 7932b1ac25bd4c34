"""Partial hub downloads (``blobs/*.incomplete``): which are removed (dead ones only, never one
another process may be writing) and what happens when removing them fails (logged: neither the
gateway's start nor a download's end is stopped by it)."""

from __future__ import annotations

import json
import os
import threading
import time

from filelock import FileLock

from shared.hub import LOCK_FILE_MODE, PARTIAL_IDLE_SECONDS, remove_stale_partials, repo_folder
from tests.admin.test_models_api import ADMIN, ADMIN_KEY, NOT_GGUF, finished, hub  # noqa: F401 (fixture)
from tests.harness import wait_until

REPO = "fake-org/Partial-GGUF"


def partial(hub_cache, name: str, *, age: float, repo: str = REPO):
    path = repo_folder(hub_cache, repo) / "blobs" / f"{name}.incomplete"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 100)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_only_idle_partials_whose_lock_is_free_are_removed(tmp_path):
    cache = tmp_path / "hub"
    dead = partial(cache, "dead", age=PARTIAL_IDLE_SECONDS + 60)
    fresh = partial(cache, "fresh", age=1)        # written a second ago: maybe by another host
    locked = partial(cache, "locked", age=PARTIAL_IDLE_SECONDS + 60)
    own = partial(cache, "own", age=0)            # the caller's own download wrote it, now stopped
    taken, release = threading.Event(), threading.Event()

    def downloader() -> None:  # another download holding huggingface-hub's lock of its blob
        lock_path = cache / ".locks" / repo_folder(cache, REPO).name / "locked.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=downloader)
    holder.start()
    try:
        assert taken.wait(10)
        assert remove_stale_partials(cache, REPO, own={own}) == [dead, own]
        assert fresh.exists() and locked.exists()
    finally:
        release.set()
        holder.join(10)
    assert remove_stale_partials(cache, REPO) == [locked]  # its download is gone: now it is dead
    assert fresh.exists()
    lock_file = cache / ".locks" / repo_folder(cache, REPO).name / "dead.lock"
    assert lock_file.stat().st_mode & 0o777 == LOCK_FILE_MODE  # huggingface-hub's mode, whatever the umask


class NoLocks:
    """filelock on a filesystem without locks (some network filesystems)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def acquire(self, *args, **kwargs):
        raise NotImplementedError("FileSystem does not appear to support flock; use SoftFileLock instead")

    def __enter__(self):
        return self.acquire()

    def release(self, *args, **kwargs) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


def test_a_failing_cleanup_neither_stops_the_start_nor_leaves_a_download_unfinished(
        hub, tmp_path, monkeypatch, caplog):  # noqa: F811 (fixtures)
    import filelock
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from tests.gateway.conftest import CATALOGUE, gateway_settings

    cache = tmp_path / "hub-cache"
    # The gateway's own model cache (its download journal), not the one other tests share.
    catalogue = CATALOGUE.model_copy(update={"fleet": CATALOGUE.fleet.model_copy(
        update={"model_cache_dir": str(tmp_path / "models")})})
    journal = tmp_path / "models" / "hub-downloads"
    journal.mkdir(parents=True)
    entry, elsewhere = journal / "dl_killed.json", journal / "dl_elsewhere.json"
    entry.write_text(json.dumps({"repo_id": REPO, "hub_cache": str(cache)}))
    # Another hub cache's download (another configuration): not this gateway's to clean.
    elsewhere.write_text(json.dumps({"repo_id": REPO, "hub_cache": str(tmp_path / "other-cache")}))
    left = partial(tmp_path / "other-cache", "left", age=PARTIAL_IDLE_SECONDS + 60)
    dead = partial(cache, "dead", age=PARTIAL_IDLE_SECONDS + 60)
    monkeypatch.setattr(filelock, "FileLock", NoLocks)
    with TestClient(create_app(catalogue, gateway_settings(tmp_path, admin_key=ADMIN_KEY)),
                    raise_server_exceptions=False) as gateway:  # the start goes on
        assert gateway.get("/api/admin/session", headers=ADMIN).status_code == 200
        assert dead.exists() and entry.exists()  # kept for a start that can clean it
        assert "cannot remove the partial downloads" in caplog.text
        assert left.exists() and elsewhere.exists()
        # A download that fails, with a dead partial file of its repository its cleanup trips on.
        partial(cache, "dead2", age=PARTIAL_IDLE_SECONDS + 60, repo=NOT_GGUF)
        started = gateway.post("/api/admin/models", json={"repo": NOT_GGUF, "quant": "Q4_K_M"},
                               headers=ADMIN).json()
        done = finished(gateway, started["id"])
        assert done["state"] == "failed" and "not a GGUF file" in done["error"]  # huggingface-hub: a soft lock
        wait_until(lambda: gateway.get(f"/api/admin/downloads/{started['id']}", headers=ADMIN).json()["finished_at"],
                   10, what="the download's end recorded")
        assert "cannot clean up after it: NotImplementedError" in caplog.text

