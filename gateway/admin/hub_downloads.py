"""Models from the Hugging Face hub, added at runtime: which file a repository and quantisation
name, and its download into the hub cache with progress, bounds and cancellation.

`HubDownloads.inspect(repo, quant)` lists the repository through huggingface-hub's `HfApi`
(one paged API call) and picks the quantisation's GGUF as ``hub:<repo>:<QUANT>`` sources do
(`shared.hub.pick_quant_files`), with each file's size and the sha256 the hub gives LFS files.

`HubDownloads.start(...)` downloads those files with huggingface-hub's own `hf_hub_download`
(its cache layout, locking and partial-file clean-up) in a worker thread, so the event loop only
reads the counters. Progress comes from the progress-bar class huggingface-hub takes
(`tqdm_class`): it is made when a file's body starts, with the size the server announced (a
size past the limit ends the transfer there), and each chunk calls its `update` before the chunk
is written, which adds to the download's counter and raises, ending the transfer, when the
download was cancelled or the bytes pass the size limit; huggingface-hub then deletes its
partial file. Every file is then checked: its size against the
listing, its sha256 against the hub's when the hub gives one, and the GGUF magic of the first.
A sha256 checked here is remembered the way a service's own check is (`shared.hub.remember_verified`),
so the model's first start does not hash the file again.

Bounds: the listed size is checked against the limit before any byte is fetched; one download
at a time per model (key) and per source; at most `max_active` downloads at once. Listings run
on one executor of `max_listings` threads: a listing still running (a hung hub) keeps its
thread, and past `max_listings` of them a listing is refused at once (503), so a hung hub never
piles up threads.

Partial files: a download in flight when the gateway is killed leaves huggingface-hub's
``blobs/*.incomplete`` file (up to the size limit) in the hub cache. Each download writes a
journal entry (``<model cache>/hub-downloads/<id>.json``, the repository) while it runs;
`recover()`, at the gateway's start, and the end of every failed or cancelled download remove
the partial files of the journalled repositories that no download is writing (their
huggingface-hub lock is free: `shared.hub.remove_stale_partials`).

Configuration (`HubConfig`: limits, the hub's address and cache, timeouts) is passed in once, at
construction; huggingface-hub's own module constants (its chunk size, Xet) are set once there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from shared.catalogue import QUANT_RE
from shared.errors import DomainError
from shared.hub import (AmbiguousQuant, QuantNotFound, RepoFile, SplitPartsMissing, TooManyFiles, hub_cache_dir,
                        hub_endpoint, fingerprint, list_repo_files, partial_files, pick_quant_files,
                        remember_verified, remove_stale_partials, split_repo)
from shared.model_files import sha256_of

log = logging.getLogger("gateway.admin.hub")

REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}(@[A-Za-z0-9._/-]{1,100})?$")
MAX_TREE_ENTRIES = 20_000   # a repository listing longer than this is refused, not read to its end
FINISHED_KEPT = 50          # finished downloads still shown, newest first
# huggingface-hub reads a body in chunks of `constants.DOWNLOAD_CHUNK_SIZE` (10 MB) and reports
# progress once per chunk: too coarse for a progress bar, and a cancel would wait for the next
# 10 MB. The gateway's downloads read 1 MiB chunks, over plain HTTP: its Xet transfer (hf_xet)
# reports progress from its own threads, where the progress class cannot stop a transfer, so it
# is turned off in the gateway (which downloads nothing else; the hub serves every file over HTTP).
PROGRESS_CHUNK = 1024 * 1024


class HubError(DomainError):
    code = "hub_error"


class InvalidHubRequest(HubError):
    code = "invalid_value"


class RepositoryNotFound(HubError):
    code = "repository_not_found"


class RepositoryGated(HubError):
    code = "repository_gated"


class RevisionNotFound(HubError):
    code = "revision_not_found"


class QuantisationNotFound(HubError):
    code = "quantisation_not_found"


class QuantisationAmbiguous(HubError):
    code = "quantisation_ambiguous"


class SplitIncomplete(HubError):
    code = "split_parts_missing"


class HubUnavailable(HubError):
    code = "hub_unavailable"


class DownloadTooLarge(HubError):
    code = "download_too_large"


class DownloadInProgress(HubError):
    code = "download_in_progress"


class TooManyDownloads(HubError):
    code = "too_many_downloads"


class HubBusy(HubError):
    code = "hub_busy"


class DownloadNotFound(HubError):
    code = "download_not_found"


class _Stop(Exception):
    """Raised from the progress callback to end a transfer (cancelled, or over the limit)."""


@dataclass(frozen=True)
class HubConfig:
    """What the hub downloads are given, read once when the gateway starts."""

    cache_dir: Path               # the project's model cache (verified markers, the journal)
    hub_cache: Path               # huggingface-hub's cache the files go to (`shared.hub.hub_cache_dir`)
    endpoint: str | None          # the hub (HF_ENDPOINT); None: huggingface.co
    max_bytes: int
    max_active: int = 2
    list_timeout: float = 30.0    # seconds a listing is waited for
    max_listings: int = 4         # listings running at once (each holds a thread)
    chunk_size: int = PROGRESS_CHUNK

    @classmethod
    def from_environment(cls, cache_dir: Path, *, max_bytes: int, max_active: int = 2, list_timeout: float = 30.0,
                         max_listings: int = 4) -> HubConfig:
        return cls(cache_dir, hub_cache_dir(cache_dir), hub_endpoint(), max_bytes, max_active, list_timeout,
                   max_listings)

    @property
    def where(self) -> str:
        return self.endpoint or "https://huggingface.co"


def configure_hub_library(chunk_size: int) -> None:
    """huggingface-hub reads these as module constants only: its chunk size (the progress and
    cancel granularity) and Xet off (see `PROGRESS_CHUNK`). Set once, not per download."""
    from huggingface_hub import constants

    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, chunk_size)
    constants.HF_HUB_DISABLE_XET = True


@dataclass(frozen=True)
class HubChoice:
    """The files of one quantisation of a repository (several when split in parts, first first)."""

    repo: str        # as given, with its @revision if any
    quant: str
    files: tuple[RepoFile, ...]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def source(self) -> str:
        return f"hub:{self.repo}:{self.quant}"

    @property
    def repo_id(self) -> str:
        """The repository without its @revision: ``org/name``."""
        return split_repo(self.repo)[0]

    def default_key(self) -> str:
        name = self.repo_id.split("/", 1)[1].lower()
        name = re.sub(r"[-_.]gguf$", "", name)
        key = re.sub(r"[^a-z0-9._-]+", "-", f"{name}-{self.quant.lower()}").strip("-._")
        return key[:63].rstrip("-._") or "model"

    def public(self, max_bytes: int) -> dict[str, Any]:
        return {"object": "admin.hub_choice", "repo": self.repo, "quant": self.quant, "source": self.source,
                "files": [asdict(f) for f in self.files], "total_size": self.total_size,
                "max_download_bytes": max_bytes, "fits": self.total_size <= max_bytes,
                "suggested_key": self.default_key()}


@dataclass
class Download:
    id: str
    key: str
    choice: HubChoice
    actor: str
    max_bytes: int
    state: str = "downloading"   # -> verifying -> done | failed | cancelled
    bytes_done: int = 0
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    paths: list[str] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None
    partials_before: set[Path] = field(default_factory=set)  # the repository's partial files at its start

    @property
    def active(self) -> bool:
        return self.state in ("downloading", "verifying")

    def announce(self, size: int | None) -> None:
        """Called by the worker thread when a file's transfer starts, with the size the server
        announced: a file that would pass the limit is refused before its body is read."""
        if size is not None and self.bytes_done + size > self.max_bytes:
            raise _Stop(f"the hub announced {size} bytes, which passes the size limit of {self.max_bytes} bytes "
                        f"(it listed {self.choice.total_size} for the whole model)")

    def advance(self, n: int) -> None:
        """Called by the worker thread for each chunk written; raises to stop the transfer."""
        if self.cancel_requested.is_set():
            raise _Stop("cancelled")
        self.bytes_done += n
        if self.bytes_done > self.max_bytes:
            raise _Stop(f"the download passed the size limit of {self.max_bytes} bytes "
                        f"(the hub listed {self.choice.total_size})")

    def public(self) -> dict[str, Any]:
        total = self.choice.total_size
        return {"object": "admin.download", "id": self.id, "model": self.key, "repo": self.choice.repo,
                "quant": self.choice.quant, "source": self.choice.source, "state": self.state,
                "bytes_done": min(self.bytes_done, total) if self.state == "done" else self.bytes_done,
                "bytes_total": total, "progress": round(min(self.bytes_done / total, 1.0), 4) if total else 0.0,
                "files": [asdict(f) for f in self.choice.files], "error": self.error,
                "started_at": self.started_at, "finished_at": self.finished_at}


def _progress_class(download: Download):
    """A huggingface-hub progress bar that draws nothing and counts into `download`."""
    from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

    class Progress(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            total, initial = kwargs.get("total"), kwargs.get("initial") or 0
            download.announce(None if total is None else int(total) - int(initial))
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            download.advance(int(n or 0))
            return super().update(n)

    return Progress


Completion = Callable[[Download], Awaitable[None]]


class HubDownloads:
    """The hub's side of adding a model: list, pick, download, check."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.max_bytes = config.max_bytes
        self._downloads: dict[str, Download] = {}
        self._ids = itertools.count(1)
        self._listers = ThreadPoolExecutor(config.max_listings, thread_name_prefix="hub-list")
        self._listing = 0              # listings whose thread still runs (a timed-out one included)
        self._listing_lock = threading.Lock()
        self._journal = config.cache_dir / "hub-downloads"
        configure_hub_library(config.chunk_size)

    # -- which file ------------------------------------------------------------------------

    async def inspect(self, repo: Any, quant: Any) -> HubChoice:
        if not isinstance(repo, str) or not REPO_RE.match(repo.strip()):
            raise InvalidHubRequest(f"repo: give the hub repository as owner/name (optionally @revision); "
                                    f"got {repo!r}.", param="repo")
        if not isinstance(quant, str) or not QUANT_RE.match(quant.strip()):
            raise InvalidHubRequest(f"quant: give a quantisation such as Q4_K_M, Q8_0 or F16; got {quant!r}.",
                                    param="quant")
        repo, quant = repo.strip(), quant.strip()
        listed = await self._bounded_list(repo)
        try:
            chosen = pick_quant_files(list(listed), quant)
        except SplitPartsMissing as exc:
            raise SplitIncomplete(f"{repo}: {exc}.", param="quant") from None
        except AmbiguousQuant as exc:
            raise QuantisationAmbiguous(f"{repo}: {exc}.", param="quant") from None
        except QuantNotFound as exc:
            raise QuantisationNotFound(f"{repo}: {exc}.", param="quant") from None
        return HubChoice(repo, quant.upper(), tuple(listed[p] for p in chosen))

    async def _bounded_list(self, repo: str) -> dict[str, RepoFile]:
        """`_list` on the listing executor, waited for `list_timeout`; refused (503) while
        `max_listings` listings still hold their thread."""
        with self._listing_lock:
            if self._listing >= self.config.max_listings:
                raise HubBusy(f"{self._listing} hub listings are still running (the hub at {self.config.where} "
                              "is slow to answer); try again shortly.", param="repo", retry_after=10)
            self._listing += 1
        try:
            future = self._listers.submit(self._list, repo)
        except BaseException:
            self._done_listing(None)
            raise
        future.add_done_callback(self._done_listing)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.list_timeout)
        except asyncio.TimeoutError:
            raise HubUnavailable(f"the hub did not list {repo} within {self.config.list_timeout:g} s.",
                                 param="repo") from None

    def _done_listing(self, _future: Any) -> None:
        with self._listing_lock:
            self._listing -= 1

    def _list(self, repo: str) -> dict[str, RepoFile]:
        """The repository's files (path -> `RepoFile`), in a listing thread."""
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                            RevisionNotFoundError)

        repo_id, revision = split_repo(repo)
        where = self.config.where
        try:
            listed = list_repo_files(repo_id, revision, endpoint=self.config.endpoint, max_entries=MAX_TREE_ENTRIES)
        except TooManyFiles:
            raise InvalidHubRequest(f"{repo} has more than {MAX_TREE_ENTRIES} files; name a smaller "
                                    "repository.", param="repo") from None
        except GatedRepoError:
            raise RepositoryGated(f"{repo} is gated on {where}: the gateway's HF_TOKEN must belong to an account "
                                  "that accepted its terms.", param="repo") from None
        except RepositoryNotFoundError:
            raise RepositoryNotFound(f"No repository {repo_id} on {where} (or it is private and the gateway's "
                                     "HF_TOKEN does not grant access).", param="repo") from None
        except RevisionNotFoundError:
            raise RevisionNotFound(f"{repo_id} has no revision {revision!r} on {where}.", param="repo") from None
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise HubUnavailable(f"the hub at {where} answered HTTP {status} listing {repo}.", param="repo") from None
        except Exception as exc:  # connection refused, DNS, timeouts
            raise HubUnavailable(f"cannot list {repo} on {where}: {type(exc).__name__}: {exc}".rstrip(": ") + ".",
                                 param="repo") from None
        return listed

    # -- downloads -------------------------------------------------------------------------

    def active(self) -> list[Download]:
        return [d for d in self._downloads.values() if d.active]

    def all(self) -> list[Download]:
        return sorted(self._downloads.values(), key=lambda d: d.started_at, reverse=True)

    def get(self, download_id: str) -> Download:
        try:
            return self._downloads[download_id]
        except KeyError:
            raise DownloadNotFound(f"No download {download_id!r}.", param="id") from None

    def check_can_start(self, key: str, choice: HubChoice) -> None:
        """Refuse before any byte moves: too large, the model or file already downloading, too many."""
        if choice.total_size > self.max_bytes:
            raise DownloadTooLarge(
                f"{choice.source} is {choice.total_size} bytes, above the gateway's download limit of "
                f"{self.max_bytes} bytes (ARENA_ADMIN_MAX_DOWNLOAD_BYTES).", param="quant")
        for other in self.active():
            if other.key == key or other.choice.source == choice.source:
                raise DownloadInProgress(f"{other.choice.source} is already downloading as model '{other.key}' "
                                         f"(download {other.id}); wait for it or cancel it.", param="model")
        if len(self.active()) >= self.config.max_active:
            raise TooManyDownloads(f"{self.config.max_active} downloads are running; wait for one to finish.",
                                   retry_after=5)

    def start(self, key: str, choice: HubChoice, *, actor: str, on_complete: Completion) -> Download:
        self.check_can_start(key, choice)
        download = Download(f"dl_{next(self._ids)}_{uuid.uuid4().hex[:8]}", key, choice, actor, self.max_bytes)
        self._downloads[download.id] = download
        download.task = asyncio.get_running_loop().create_task(self._run(download, on_complete),
                                                               name=f"download {download.id}")
        self._forget_old()
        return download

    def cancel(self, download_id: str) -> Download:
        download = self.get(download_id)
        if download.active:
            download.cancel_requested.set()
        return download

    async def close(self, timeout: float = 15.0) -> None:
        """Cancel every download and wait (bounded) for their threads to notice."""
        tasks = [d.task for d in self.active() if d.task is not None]
        for download in self.active():
            download.cancel_requested.set()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._listers.shutdown(wait=False, cancel_futures=True)

    # -- partial files left behind ---------------------------------------------------------

    def _journal_path(self, download: Download) -> Path:
        return self._journal / f"{download.id}.json"

    def _write_journal(self, download: Download) -> None:
        self._journal.mkdir(parents=True, exist_ok=True)
        self._journal_path(download).write_text(json.dumps({
            "repo_id": download.choice.repo_id, "hub_cache": str(self.config.hub_cache)}))

    def _clean_partials(self, download: Download) -> None:
        """After a failed or cancelled download: its own partial files (those that appeared while
        it ran) and its repository's others that nothing writes (`remove_stale_partials`)."""
        repo_id = download.choice.repo_id
        own = partial_files(self.config.hub_cache, repo_id) - download.partials_before
        removed = remove_stale_partials(self.config.hub_cache, repo_id, own=own)
        if removed:
            log.info("download %s: removed %d partial file(s)", download.id, len(removed))

    def recover(self) -> list[Path]:
        """At start: remove the partial files of downloads a killed gateway left (journalled
        repositories of this hub cache only, and only files no download is writing); their
        journal entries go once nothing of theirs is left. A cleanup that fails is logged, never
        stops the start. Returns the files removed."""
        removed: list[Path] = []
        for entry in sorted(self._journal.glob("*.json")) if self._journal.is_dir() else []:
            if any(d.active and self._journal_path(d) == entry for d in self._downloads.values()):
                continue
            try:
                record = json.loads(entry.read_text())
                repo_id, hub_cache = str(record["repo_id"]), Path(record["hub_cache"])
            except (OSError, ValueError, KeyError, TypeError):
                entry.unlink(missing_ok=True)
                continue
            if hub_cache != self.config.hub_cache:
                log.info("download journal %s is for another hub cache (%s): left alone", entry.name, hub_cache)
                continue
            try:
                removed += remove_stale_partials(hub_cache, repo_id)
                if not partial_files(hub_cache, repo_id):
                    entry.unlink(missing_ok=True)
            except Exception as exc:  # PermissionError, a filesystem without locks: the start goes on
                log.warning("cannot remove the partial downloads of %s in %s: %s: %s", repo_id, hub_cache,
                            type(exc).__name__, exc)
        if removed:
            log.warning("removed %d partial download(s) left by a stopped gateway: %s", len(removed),
                        ", ".join(p.name for p in removed))
        return removed

    async def _run(self, download: Download, on_complete: Completion) -> None:
        try:
            await asyncio.to_thread(self._write_journal, download)
            download.partials_before = await asyncio.to_thread(
                partial_files, self.config.hub_cache, download.choice.repo_id)
            download.paths = await asyncio.to_thread(self._fetch, download)
            download.state = "verifying"
            await asyncio.to_thread(self._verify, download)
            await on_complete(download)
            download.state = "done"
        except _Stop as exc:
            download.state = "cancelled" if download.cancel_requested.is_set() else "failed"
            download.error = None if download.state == "cancelled" else str(exc)
        except Exception as exc:
            download.state = "failed"
            download.error = str(exc) or type(exc).__name__
            log.warning("download %s of %s failed: %s", download.id, download.choice.source, download.error)
        finally:
            try:
                if download.state != "done":
                    await asyncio.to_thread(self._clean_partials, download)
                self._journal_path(download).unlink(missing_ok=True)
            except Exception as exc:  # not only OSError: a filesystem without locks, say
                log.warning("download %s: cannot clean up after it: %s: %s", download.id, type(exc).__name__, exc)
            download.finished_at = time.time()

    def _fetch(self, download: Download) -> list[str]:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

        repo_id, revision = split_repo(download.choice.repo)
        cache = self.config.hub_cache
        paths = []
        for hub_file in download.choice.files:
            try:
                paths.append(hf_hub_download(repo_id=repo_id, filename=hub_file.path, revision=revision,
                                             cache_dir=cache, endpoint=self.config.endpoint,
                                             tqdm_class=_progress_class(download)))
            except _Stop:
                raise
            except GatedRepoError:  # the hub lists a gated repository's files to anyone
                raise HubError(f"{repo_id} is gated: the gateway's HF_TOKEN must belong to an account that "
                               "accepted its terms on the hub.") from None
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                raise HubError(f"the hub answered HTTP {status} for {hub_file.path}.") from None
            except Exception as exc:
                if isinstance(exc.__context__, _Stop):  # wrapped by a retry of huggingface-hub's
                    raise exc.__context__ from None
                raise HubError(f"downloading {hub_file.path} failed: {type(exc).__name__}: {exc}") from None
            if download.cancel_requested.is_set():
                raise _Stop("cancelled")
        return paths

    def _verify(self, download: Download) -> None:
        """Sizes as listed, sha256 as the hub gives it, the GGUF magic; a file that fails and that
        this download fetched is removed from the cache (blob and snapshot link)."""
        for hub_file, path_text in zip(download.choice.files, download.paths):
            path = Path(path_text)
            problem = None
            before = fingerprint(path)  # taken before hashing: a change meanwhile leaves no marker
            size = path.stat().st_size
            if size != hub_file.size:
                problem = f"{hub_file.path} is {size} bytes; the hub listed {hub_file.size}"
            elif hub_file.sha256 and sha256_of(path) != hub_file.sha256.lower():
                problem = f"{hub_file.path} does not have the sha256 the hub lists ({hub_file.sha256})"
            elif hub_file is download.choice.files[0]:
                with path.open("rb") as handle:
                    if handle.read(4) != b"GGUF":
                        problem = f"{hub_file.path} is not a GGUF file (no GGUF magic at its start)"
            if not problem and hub_file.sha256:  # the service's own check (shared.hub) will trust it
                remember_verified(path, hub_file.sha256, self.config.cache_dir, before)
            if problem:
                if download.bytes_done:  # fetched by this download, not a file the cache already had
                    path.resolve().unlink(missing_ok=True)
                    path.unlink(missing_ok=True)
                    problem += "; the downloaded file was removed"
                raise HubError(problem + ".")

    def _forget_old(self) -> None:
        finished = [d for d in self.all() if not d.active]
        for old in finished[FINISHED_KEPT:]:
            del self._downloads[old.id]
