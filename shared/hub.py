"""Fetch a model's GGUF file from the Hugging Face hub (``hub:<repo>:<file>`` sources), once.

The download is huggingface-hub's own `hf_hub_download`: its cache layout, its locking, its
resume and its environment variables. What this module adds is where the cache lives, the
sha256 check of the catalogue, the progress bar policy and readable errors.

Where the file is cached
    The hub's cache layout (``models--<org>--<name>/{blobs,refs,snapshots}``) under
    ``<cache_dir>/hub``, ``cache_dir`` being the project's model cache
    (``fleet.model_cache_path()``), so that all the fleet's models live in one place.
    If the user sets ``HF_HUB_CACHE`` (or the legacy ``HUGGINGFACE_HUB_CACHE``) or ``HF_HOME``
    explicitly, their hub cache is used instead (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), so a
    model they already downloaded with other tools is not fetched twice. These variables are read
    when the fetch runs, not when huggingface-hub was imported.

Environment
    ``HF_ENDPOINT``   the hub (or mirror) to fetch from; read at each fetch and passed explicitly.
    ``HF_TOKEN``      sent as ``Authorization: Bearer ...`` (huggingface-hub's implicit token,
                      which also falls back to the token file of ``hf auth login``).
    ``HF_HUB_OFFLINE=1``  no network at all: the cached file is used, or a `ModelFileError`
                      says it is not cached.

Every fetch asks the hub for the file's metadata (one HEAD request) so a moved branch is noticed;
the body is downloaded only when the cache lacks that version. When the hub cannot be reached
and the file is cached, the cached file is used.

A ``sha256`` in the catalogue is checked against the file; a mismatch raises `ModelFileError`
and deletes nothing (the file may sit in the user's own hub cache). A successful check is
remembered in ``<cache_dir>/hub-verified/`` (keyed by path, size and mtime) so a large file is
hashed once, not at each start; the admin side's download, which checks the sha256 the hub lists,
writes the same marker (`remember_verified`), so a model added at runtime is not hashed again at
its first start.

The repo may name a revision as ``org/name@revision`` (a branch, tag or commit hash), e.g.
``hub:org/name@3f2a...:model.gguf``; without one, ``main``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from shared.catalogue import ModelSpec
from shared.model_files import ModelFileError, sha256_of

_TRUE = {"1", "on", "yes", "true"}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def hub_cache_dir(cache_dir: Path) -> Path:
    """The hub cache a fetch uses (see the module docstring)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(os.path.expandvars(home)).expanduser() / "hub"
    return Path(cache_dir).expanduser() / "hub"


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), as set now or when huggingface-hub was imported."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def split_repo(repo: str) -> tuple[str, str | None]:
    """``org/name@revision`` -> (``org/name``, ``revision``); no revision: None (``main``)."""
    repo_id, at, revision = repo.partition("@")
    return repo_id, (revision if at and revision else None)


def hub_endpoint() -> str | None:
    """``HF_ENDPOINT`` as set now (huggingface-hub reads it once, at import), without a final slash."""
    return (os.environ.get("HF_ENDPOINT") or "").rstrip("/") or None


def _progress_bar_class(progress: bool | None):
    """The tqdm class for huggingface-hub: None keeps its own default, a bar only when stderr is
    a terminal. ``HF_HUB_DISABLE_PROGRESS_BARS=1`` still wins over ``progress=True``."""
    if progress is None:
        return None
    from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

    class _Bar(hub_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = not progress
            super().__init__(*args, **kwargs)

    return _Bar


def _describe(spec: ModelSpec) -> str:
    if spec.source.quant:
        return f"{spec.key}: quantisation {spec.source.quant} of hub repo {spec.source.repo!r}"
    return f"{spec.key}: hub file {spec.source.file!r} of repo {spec.source.repo!r}"


# ----- hub:<repo>:<QUANT>: which file that is ---------------------------------------------------

SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
MAX_LISTED = 20


class QuantNotFound(Exception):
    """The repository has no single GGUF of the asked quantisation."""


class AmbiguousQuant(QuantNotFound):
    """Several GGUF models of the repository match the quantisation."""


class SplitPartsMissing(QuantNotFound):
    """The quantisation is split in parts and some of them are not in the repository."""


def pick_quant_files(paths: list[str], quant: str) -> list[str]:
    """The GGUF file of quantisation `quant` among a repository's files, as llama.cpp's
    ``-hf repo:QUANT`` picks it: the name holds the quantisation as a whole word, not followed by more of a name (so Q4_K does
    not pick Q4_K_M); projector files (mmproj) are not models. A model split in parts gives
    every part, first part first. Raises `QuantNotFound` naming what exists."""
    ggufs = sorted(p for p in paths if p.lower().endswith(".gguf") and "mmproj" not in p.rsplit("/", 1)[-1].lower())
    word = re.compile(rf"(^|[-_./]){re.escape(quant)}([-.]|$)", re.IGNORECASE)
    matches = [p for p in ggufs if word.search(SPLIT_RE.sub(".gguf", p)[: -len(".gguf")])]
    if not matches:
        listed = ", ".join(p.rsplit("/", 1)[-1] for p in ggufs[:MAX_LISTED]) or "no GGUF file at all"
        more = f" and {len(ggufs) - MAX_LISTED} more" if len(ggufs) > MAX_LISTED else ""
        raise QuantNotFound(f"no GGUF of quantisation {quant} in the repository; it has: {listed}{more}")
    models = {SPLIT_RE.sub("", p) if SPLIT_RE.search(p) else p for p in matches}
    if len(models) > 1:
        raise AmbiguousQuant(f"several GGUF files match {quant}: {', '.join(sorted(matches)[:MAX_LISTED])}; "
                            "name the file instead (hub:<repo>:<file>)")
    split = [p for p in matches if SPLIT_RE.search(p)]
    if not split:
        return matches
    total = int(SPLIT_RE.search(split[0]).group(2))
    present = {int(SPLIT_RE.search(p).group(1)) for p in split}
    missing = sorted(set(range(1, total + 1)) - present)
    if missing:
        raise SplitPartsMissing(f"{quant} is split in {total} parts and parts {missing} are missing from the repository")
    return sorted(split, key=lambda p: int(SPLIT_RE.search(p).group(1)))


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None   # the hub gives it for LFS files (every GGUF of note)


class TooManyFiles(Exception):
    """The repository lists more files than the caller reads."""


def list_repo_files(repo_id: str, revision: str | None, *, endpoint: str | None,
                    max_entries: int = 20_000) -> dict[str, RepoFile]:
    """The repository's files (path -> `RepoFile`), in one paged API call of huggingface-hub;
    folders are left out. Raises huggingface-hub's errors as they come, and `TooManyFiles` past
    `max_entries` (the listing is not read to its end)."""
    from huggingface_hub import HfApi

    files: dict[str, RepoFile] = {}
    for entry in HfApi(endpoint=endpoint).list_repo_tree(repo_id, revision=revision, recursive=True):
        if len(files) >= max_entries:
            raise TooManyFiles(f"{repo_id} has more than {max_entries} files")
        if hasattr(entry, "size"):
            lfs = getattr(entry, "lfs", None)
            files[entry.path] = RepoFile(entry.path, int(entry.size), lfs.sha256 if lfs else None)
    return files


def _quant_files(repo_id: str, revision: str | None, quant: str, *, endpoint: str | None, cache: Path,
                 offline: bool) -> list[str]:
    """List the repository (one API call) and pick the quantisation's file(s). Offline, or with
    the hub unreachable, the files already in the hub cache are listed instead."""
    from huggingface_hub.errors import HfHubHTTPError

    if not offline:
        try:
            return pick_quant_files(list(list_repo_files(repo_id, revision, endpoint=endpoint)), quant)
        except HfHubHTTPError:
            raise  # the repo or revision is wrong, or access is denied: the caller says which
        except TooManyFiles as exc:
            raise QuantNotFound(str(exc)) from None
        except Exception as exc:  # the hub cannot be reached (httpx's errors, timeouts, DNS)
            cached = _cached_files(cache, repo_id)
            if not cached:
                raise ConnectionError(f"cannot list the repository to find {quant}: {_root_cause(exc)}") from exc
            return pick_quant_files(cached, quant)
    cached = _cached_files(cache, repo_id)
    if not cached:
        raise QuantNotFound(f"offline mode (HF_HUB_OFFLINE=1) and no file of the repository is in the hub cache "
                            f"{cache}: the quantisation {quant} cannot be looked up")
    return pick_quant_files(cached, quant)


def _cached_files(cache: Path, repo_id: str) -> list[str]:
    """Files of the repository present in the hub cache (any snapshot)."""
    snapshots = repo_folder(cache, repo_id) / "snapshots"
    if not snapshots.is_dir():
        return []
    return sorted({str(p.relative_to(snapshot)) for snapshot in snapshots.iterdir() if snapshot.is_dir()
                   for p in snapshot.rglob("*.gguf")})


def _verified_marker(cache_dir: Path, expected: str) -> Path:
    return Path(cache_dir).expanduser() / "hub-verified" / f"{expected}.ok"


def fingerprint(path: Path) -> str:
    """What identifies the file's bytes without reading them: its resolved path, inode, size,
    modification and change times (a copy that keeps size and mtime, `cp -p` or `rsync -a`, is
    a new inode or a new ctime). Take it before hashing and pass it to `remember_verified`."""
    stat = path.stat()
    return f"{path.resolve()}\n{stat.st_ino}\n{stat.st_size}\n{stat.st_mtime_ns}\n{stat.st_ctime_ns}\n"


def verified_before(path: Path, sha256: str, cache_dir: Path) -> bool:
    """The file was checked against `sha256` and has not changed since (same resolved path,
    inode, size, modification and change times): no need to hash it again."""
    try:
        return _verified_marker(cache_dir, sha256.strip().lower()).read_text() == fingerprint(path)
    except OSError:
        return False


def remember_verified(path: Path, sha256: str, cache_dir: Path, before: str) -> None:
    """Record that `path` has `sha256` (checked by the caller), for `verified_before`: whoever
    checked it (a service's first start, or the admin side's download), it is hashed once.
    `before`: the file's `fingerprint` taken before it was hashed; nothing is recorded if the
    file changed meanwhile."""
    try:
        if fingerprint(path) != before:
            return
        marker = _verified_marker(cache_dir, sha256.strip().lower())
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(before)
    except OSError:
        pass  # only a shortcut for next time


def _verify(spec: ModelSpec, path: Path, cache_dir: Path) -> None:
    expected = (spec.sha256 or "").strip().lower()
    if not expected or verified_before(path, expected, cache_dir):
        return
    before = fingerprint(path)
    actual = sha256_of(path)
    if actual != expected:
        raise ModelFileError(
            f"{_describe(spec)}: the downloaded file {path} (-> {path.resolve()}) has sha256 {actual}, "
            f"but the catalogue expects {expected}. Nothing was deleted. Either the catalogue's sha256 "
            "is wrong, or the file on the hub changed: pin a revision (repo@commit) or update the "
            "sha256."
        )
    remember_verified(path, expected, cache_dir, before)


def repo_folder(hub_cache: Path, repo_id: str) -> Path:
    """The repository's folder in the hub cache (huggingface-hub's layout)."""
    return Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))


PARTIAL_IDLE_SECONDS = 120.0
"""A partial download not written for this long is taken for dead (with its lock free): on some
network filesystems a lock can always be taken, even while another process downloads."""

LOCK_FILE_MODE = 0o664  # the mode huggingface-hub gives its lock files


def remove_stale_partials(hub_cache: Path, repo_id: str, *, own: Collection[Path] = (),
                          idle_seconds: float = PARTIAL_IDLE_SECONDS) -> list[Path]:
    """Delete the repository's partial downloads (``blobs/*.incomplete``) that no download is
    writing: huggingface-hub holds ``.locks/<repo folder>/<etag>.lock`` while it downloads the
    blob ``<etag>``, so a partial file whose lock can be taken at once, and that nothing wrote for
    `idle_seconds` (a lock is no proof everywhere), was left by a download that died (a killed
    process). `own`: partial files the caller's own download, now stopped, wrote: no idle time
    asked of them. Returns the files removed."""
    from filelock import FileLock, Timeout

    folder = repo_folder(hub_cache, repo_id)
    own = {Path(p) for p in own}
    removed: list[Path] = []
    for partial in sorted(partial_files(hub_cache, repo_id)):
        try:
            idle = time.time() - partial.stat().st_mtime
        except FileNotFoundError:
            continue
        if partial not in own and idle < idle_seconds:
            continue  # written lately: maybe by a download elsewhere whose lock we cannot see
        etag = partial.name.split(".", 1)[0]
        lock_path = Path(hub_cache) / ".locks" / folder.name / f"{etag}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path), timeout=0, mode=LOCK_FILE_MODE)
        try:
            with lock:
                partial.unlink(missing_ok=True)
                removed.append(partial)
        except Timeout:
            continue  # a download of that blob is running (here or in another process)
    return removed


def partial_files(hub_cache: Path, repo_id: str) -> set[Path]:
    """The repository's partial downloads now (``blobs/*.incomplete``)."""
    return set((repo_folder(hub_cache, repo_id) / "blobs").glob("*.incomplete"))


def fetch_from_hub(spec: ModelSpec, cache_dir: Path, *, progress: bool | None = None) -> Path:
    """The local path of a ``hub:<repo>:<file>`` model, downloaded once into the hub cache.

    `cache_dir`: the project's model cache; the hub cache is ``<cache_dir>/hub`` unless the user set
    ``HF_HUB_CACHE`` or ``HF_HOME`` (then theirs). `progress`: show huggingface-hub's tqdm bar
    (None: only when stderr is a terminal; False: never; True: always).
    Raises `ModelFileError` with the repo and file named for every failure.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    source = spec.source
    if source.kind != "hub" or not source.repo or not (source.file or source.quant):
        raise ModelFileError(f"{spec.key}: {source} is not a hub:<repo>:<file> source")
    repo_id, revision = split_repo(source.repo)
    what = _describe(spec)
    offline = is_offline()
    endpoint = hub_endpoint()
    where = endpoint or "https://huggingface.co"
    cache = hub_cache_dir(cache_dir)
    token_set = bool(os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"))

    try:
        if source.quant:
            files = _quant_files(repo_id, revision, source.quant, endpoint=endpoint, cache=cache, offline=offline)
        else:
            files = [source.file]
        paths = [hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            revision=revision,
            cache_dir=cache,
            endpoint=endpoint,
            local_files_only=offline,
            tqdm_class=_progress_bar_class(progress),
        ) for filename in files]
        path = paths[0]  # llama.cpp finds the other parts of a split model next to the first
    except QuantNotFound as exc:
        raise ModelFileError(f"{what}: {exc}") from exc
    except GatedRepoError as exc:  # before RepositoryNotFoundError, its parent class
        advice = (
            "HF_TOKEN was sent but not granted access: accept the repo's terms on its hub page with that account"
            if token_set
            else "set HF_TOKEN to a token of an account that accepted the repo's terms"
        )
        raise ModelFileError(f"{what}: the repo is gated on {where}; {advice}.") from exc
    except RepositoryNotFoundError as exc:
        advice = "check the name; if it is private, HF_TOKEN must grant access" if token_set else (
            "check the name; if it is private or gated, set HF_TOKEN"
        )
        raise ModelFileError(f"{what}: repository not found on {where} ({advice}).") from exc
    except RevisionNotFoundError as exc:
        raise ModelFileError(f"{what}: revision {revision!r} not found on {where}.") from exc
    except LocalEntryNotFoundError as exc:
        if offline:
            raise ModelFileError(
                f"{what}: offline mode (HF_HUB_OFFLINE=1) and the file is not in the hub cache {cache}; "
                "fetch it once with the network on, or unset HF_HUB_OFFLINE."
            ) from exc
        raise ModelFileError(
            f"{what}: cannot reach the hub at {where} and the file is not in the hub cache {cache} "
            f"({_root_cause(exc)})."
        ) from exc
    except EntryNotFoundError as exc:
        raise ModelFileError(f"{what}: the repo has no such file on {where} (revision {revision or 'main'}).") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            detail = "HF_TOKEN was rejected (invalid or expired token)" if token_set else "authentication required: set HF_TOKEN"
        elif status == 403:
            detail = "access forbidden: HF_TOKEN lacks the permission to read this repo"
        else:
            detail = f"the hub answered HTTP {status}"
        raise ModelFileError(f"{what}: {detail} ({where}).") from exc
    except ValueError as exc:  # invalid repo id, bad arguments
        raise ModelFileError(f"{what}: {exc}") from exc
    except Exception as exc:  # network errors that escaped the cache fallback, disk full, permissions
        raise ModelFileError(f"{what}: download from {where} into {cache} failed: {_root_cause(exc)}") from exc

    result = Path(path)
    _verify(spec, result, cache_dir)
    return result


def _root_cause(exc: BaseException) -> str:
    """The innermost error's message (the network error under huggingface-hub's generic one)."""
    seen: set[int] = set()
    while (exc.__cause__ or exc.__context__) is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
