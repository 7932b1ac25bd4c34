"""A local fake of the Hugging Face hub: two real HTTP servers on 127.0.0.1 (the hub, and a "CDN"
on another port, as huggingface.co redirects LFS files to a CDN), answering what huggingface-hub
asks the way the hub does:

- ``HEAD/GET /{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` and a redirect to the CDN for LFS files, ``X-Error-Code``
  on errors (``RepoNotFound`` as a 401, as the hub answers an unknown or private repository);
- ``GET /api/models/{repo}/tree/{revision}?recursive=true``: the repository's folders and files
  as the hub lists them (``type`` "directory" or "file", ``oid``, ``size``, ``path``, and ``lfs``
  {``oid`` (sha256), ``size``, ``pointerSize``} for LFS files);
- byte ranges on the CDN.

Every request is recorded. For the admin side's downloads it can also pace the CDN's body
(`chunk_delay` seconds between `chunk_size` chunks, for the blobs in `paced` or all: a download
long enough to watch and cancel)
and list a file with another size than it serves (`listed_sizes`: a hub that lies).
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Iterator
from urllib.parse import unquote, urlsplit

from tests.loopback import LoopbackServer, QuietHandler

COMMIT = hashlib.sha1(b"fake commit").hexdigest()
VALID_TOKEN = "hf_fake_valid_token"
PUBLIC_REPO = "fake-org/tiny-gguf"  # an LFS file, redirected to the CDN
PLAIN_REPO = "fake-org/plain-gguf"  # a small file served by the hub itself
GATED_REPO = "fake-org/gated-gguf"
FILE = "tiny.gguf"


def fake_gguf(size: int = 300_000, seed: int = 1) -> bytes:
    """GGUF-looking bytes: magic, version 3, zero tensors and metadata, then noise."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    return header + random.Random(seed).randbytes(size - len(header))


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Request:
    server: str
    method: str
    path: str
    authorization: str | None
    range: str | None


@dataclass
class FakeHub:
    """The hub's repos, its servers and the log of what was asked."""

    files: dict[tuple[str, str], tuple[bytes, bool]] = field(default_factory=dict)  # (repo, file) -> (bytes, lfs)
    gated: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    hub_url: str = ""
    cdn_url: str = ""
    listed_sizes: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo, file) -> size the tree lists
    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0   # seconds between chunks of a CDN body
    paced: set[str] = field(default_factory=set)  # sha256 of the blobs paced; empty: every blob
    hung: set[str] = field(default_factory=set)   # repos whose listing hangs until `unhang` is set
    unhang: threading.Event = field(default_factory=threading.Event)
    _shas: dict[int, str] = field(default_factory=dict)

    def sha256(self, content: bytes) -> str:
        """The content's sha256, computed once per content (a real GGUF is large)."""
        with self.lock:
            known = self._shas.get(id(content))
        if known is None:
            known = hashlib.sha256(content).hexdigest()
            with self.lock:
                self._shas[id(content)] = known
        return known

    def repos(self) -> set[str]:
        return {repo for repo, _ in self.files}

    def record(self, server: str, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append(Request(server, handler.command, handler.path,
                                         handler.headers.get("Authorization"), handler.headers.get("Range")))

    def seen(self, server: str | None = None, method: str | None = None) -> list[Request]:
        with self.lock:
            return [r for r in self.requests
                    if (server is None or r.server == server) and (method is None or r.method == method)]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def blob(self, sha256: str) -> bytes | None:
        for content, lfs in list(self.files.values()):
            if lfs and self.sha256(content) == sha256:
                return content
        return None


def _reply(handler: QuietHandler, status: int, headers: dict[str, str], body: bytes = b"",
           hub: FakeHub | None = None, sha256: str = "") -> None:
    if hub is None or not hub.chunk_delay or (hub.paced and sha256 not in hub.paced):
        return handler.reply(status, headers, body)
    handler.reply_head(status, headers, len(body))
    if handler.command == "HEAD" or not body:
        return
    try:
        for start in range(0, len(body), hub.chunk_size):
            handler.wfile.write(body[start:start + hub.chunk_size])
            handler.wfile.flush()
            time.sleep(hub.chunk_delay)  # the pace of a slow link, not a wait for a condition
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client went away (a cancelled download)


class _Handler(QuietHandler):
    """HEAD and GET answered alike (`answer`)."""

    def do_HEAD(self) -> None:
        self.answer()

    def do_GET(self) -> None:
        self.answer()

    def answer(self) -> None:
        raise NotImplementedError


def _hub_handler(hub: FakeHub) -> type[QuietHandler]:
    class Hub(_Handler):
        def error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
            headers = {"X-Error-Message": message, "Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            if commit:
                headers["X-Repo-Commit"] = commit
            _reply(self, status, headers, json.dumps({"error": message}).encode())

        def answer(self) -> None:
            hub.record("hub", self)
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
                return self.tree("/".join(parts[2:4]), parts[5])
            if len(parts) < 5 or parts[2] != "resolve":
                return self.error(404, None, "Not Found")
            repo, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            auth = self.headers.get("Authorization")
            if auth is not None and auth != f"Bearer {VALID_TOKEN}":
                return self.error(401, None, "Invalid credentials in Authorization header")
            if repo not in hub.repos():
                return self.error(401, "RepoNotFound", "Repository not found")
            if repo in hub.gated and auth is None:
                return self.error(401, "GatedRepo", f"Access to model {repo} is restricted. You must have access "
                                  "to it and be authenticated to access it. Please log in.")
            if revision not in ("main", COMMIT):
                return self.error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            if (repo, filename) not in hub.files:
                return self.error(404, "EntryNotFound", f"{filename} does not exist on main", commit=COMMIT)
            content, lfs = hub.files[(repo, filename)]
            if lfs:
                sha = hub.sha256(content)
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n"
                return _reply(self, 302, {
                    "Location": f"{hub.cdn_url}/blobs/{sha}?X-Signature=fake",
                    "X-Repo-Commit": COMMIT,
                    "ETag": f'"{git_blob_sha1(pointer.encode())}"',
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(content)),
                })
            return _reply(self, 200, {
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{git_blob_sha1(content)}"',
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }, content)

        def tree(self, repo: str, revision: str) -> None:
            """``GET /api/models/{repo}/tree/{revision}?recursive=true``: the repo's files, as the
            hub lists them (one page; LFS files with their sha256 and size)."""
            if repo in hub.hung:
                hub.unhang.wait(60)  # a hub that does not answer (bounded, for the test's sake)
            if repo not in hub.repos():
                return self.error(401, "RepoNotFound", "Repository not found")
            if revision not in ("main", COMMIT):
                return self.error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            entries = []
            folders = sorted({path.rsplit("/", 1)[0] for (file_repo, path) in hub.files
                              if file_repo == repo and "/" in path})
            for folder in folders:  # the hub lists folders too, with a tree's oid and size 0
                entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                                "path": folder})
            for (file_repo, path), (content, lfs) in sorted(hub.files.items()):
                if file_repo != repo:
                    continue
                size = hub.listed_sizes.get((repo, path), len(content))
                entry = {"type": "file", "oid": git_blob_sha1(content), "size": size, "path": path}
                if lfs:
                    entry["lfs"] = {"oid": hub.sha256(content), "size": size, "pointerSize": 134}
                entries.append(entry)
            _reply(self, 200, {"Content-Type": "application/json"}, json.dumps(entries).encode())

    return Hub


def _cdn_handler(hub: FakeHub) -> type[QuietHandler]:
    class Cdn(_Handler):
        def answer(self) -> None:
            hub.record("cdn", self)
            path = urlsplit(self.path).path
            sha = path.rsplit("/", 1)[-1]
            content = hub.blob(sha) if path.startswith("/blobs/") else None
            if content is None:
                return _reply(self, 404, {"Content-Type": "text/plain"}, b"NoSuchKey")
            headers = {
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                "Content-Disposition": f"inline; filename*=UTF-8''{FILE}; filename=\"{FILE}\";",
                "ETag": f'"{hub.sha256(content)}"',
            }
            requested = self.headers.get("Range")
            if requested and requested.startswith("bytes="):
                start_text, _, end_text = requested[len("bytes="):].partition("-")
                start = int(start_text)
                end = int(end_text) if end_text else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                return _reply(self, 206, headers, content[start:end + 1], hub, sha)
            return _reply(self, 200, headers, content, hub, sha)

    return Cdn


@contextmanager
def serve_fake_hub(fake: FakeHub | None = None) -> Iterator[FakeHub]:
    """The fake's two servers on free ports of 127.0.0.1, for as long as the context lasts."""
    fake = fake or FakeHub()
    with LoopbackServer(_hub_handler(fake), "fake-hub") as hub, LoopbackServer(_cdn_handler(fake), "fake-cdn") as cdn:
        fake.hub_url, fake.cdn_url = hub.url, cdn.url
        yield fake
