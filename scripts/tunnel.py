"""Public URLs for a local port through Cloudflare Tunnel, with cloudflared from pycloudflared.

- `NamedTunnel`: a tunnel created by `make setup-tunnels`, whose ingress already maps the
  model's hostname to its catalogue port; cloudflared gets its token through the
  `TUNNEL_TOKEN` environment variable, so the token is never on a command line or in a log.
- `QuickTunnel`: a `trycloudflare.com` tunnel, for tests only. Cloudflare's TryCloudflare
  documentation: quick tunnels do not carry Server-Sent Events (every streamed answer breaks)
  and cap in-flight requests at 200. `choose_tunnel` refuses them unless allowed.
- `DirectUrl`: no tunnel (the local fleet and the handoff drill, where 127.0.0.1 is reachable).

A tunnel counts as up only once cloudflared logs "Registered tunnel connection" (its
connection observer, `connection/observer.go`); a quick tunnel prints its URL before that.
cloudflared refuses a `--grace-period` above 3 minutes at start-up ("grace-period must be equal
or less than 3m0s", `connection.MaxGracePeriod`), so the grace period is capped here. cloudflared
sees only its own token and the basics of a process (`scripts/child_env.py`). Its output is read
by a thread for the tunnel's whole life, so its pipe never fills.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from pycloudflared.try_cloudflare import url_pattern as QUICK_TUNNEL_URL
from pycloudflared.util import download, get_info

from scripts.child_env import cloudflared_env

if TYPE_CHECKING:
    from scripts.actions_log import JobLog

CONNECTED_MARKER = "Registered tunnel connection"
TUNNELS_ENV = "TUNNELS_JSON"
MAX_GRACE_SECONDS = 180.0       # cloudflared's connection.MaxGracePeriod (3m0s)
QUICK_TUNNEL_WARNING = ("QUICK TUNNEL: for testing only. Cloudflare's quick tunnels do not carry "
                        "Server-Sent Events, so every streamed answer will break, and they cap "
                        "in-flight requests at 200. Use a named tunnel (make setup-tunnels) for the fleet.")


class TunnelError(RuntimeError):
    pass


@dataclass(frozen=True)
class TunnelCredential:
    token: str
    hostname: str | None = None


def tunnel_credentials(text: str | None) -> dict[str, TunnelCredential]:
    """Parse `TUNNELS_JSON`: ``{"<model or gateway>": {"token": ..., "hostname": ...}}``
    (a bare string value is a token without a hostname)."""
    if not text or not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        # Never echo the text: it holds tokens.
        raise TunnelError(f"{TUNNELS_ENV} is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise TunnelError(f"{TUNNELS_ENV} must be a JSON object keyed by model")
    found: dict[str, TunnelCredential] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            found[key] = TunnelCredential(value)
        elif isinstance(value, dict) and isinstance(value.get("token"), str):
            found[key] = TunnelCredential(value["token"], value.get("hostname"))
        else:
            raise TunnelError(f"{TUNNELS_ENV}[{key!r}] has no token")
    return found


def cloudflared_binary(explicit: str | None = None, *, allow_download: bool = True) -> str:
    """cloudflared to run: an explicit path, $ARENA_CLOUDFLARED, one on PATH, or pycloudflared's
    copy (downloaded by pycloudflared on first use)."""
    for candidate in (explicit, os.environ.get("ARENA_CLOUDFLARED"), shutil.which("cloudflared")):
        if candidate:
            if not Path(candidate).is_file():
                raise TunnelError(f"cloudflared not found at {candidate}")
            return candidate
    info = get_info()
    if Path(info.executable).is_file():
        return info.executable
    if not allow_download:
        raise TunnelError("cloudflared is not installed")
    return download(info)


class Tunnel(Protocol):
    public_url: str
    # True when a successor serves the same URL (a named tunnel): then this connector must stop
    # taking requests before the service drains, or Cloudflare keeps sending it new ones.
    shared_url: bool

    def begin_stop(self) -> None: ...

    def start(self, timeout: float) -> str: ...
    def alive(self) -> bool: ...
    def stop(self, timeout: float | None = None) -> None:
        """Stop; `None` waits as long as the tunnel's own grace period lets open requests run."""


class DirectUrl:
    """No tunnel: the service's own address is its public URL."""

    shared_url = False

    def __init__(self, url: str) -> None:
        self.public_url = url

    def begin_stop(self) -> None:
        pass

    def start(self, timeout: float) -> str:
        return self.public_url

    def alive(self) -> bool:
        return True

    def stop(self, timeout: float | None = None) -> None:
        pass


class _CloudflaredProcess:
    """One cloudflared child whose log lines are watched for a pattern and handed to `log`."""

    def __init__(self, binary: str, args: list[str], env: dict[str, str], log: Callable[[str], None]) -> None:
        self._argv = [binary, *args]
        self._env = env     # the child's whole environment
        self._log = log
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._terminated = False
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._argv, env=self._env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace", start_new_session=True)
        threading.Thread(target=self._pump, name="cloudflared-log", daemon=True).start()

    def _pump(self) -> None:
        assert self.process and self.process.stderr
        for line in self.process.stderr:
            line = line.rstrip()
            self._log(line)
            with self._cond:
                # Kept until the tunnel is up (a few dozen lines), then only forwarded.
                if len(self._lines) < 1000:
                    self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, find: Callable[[str], str | None], timeout: float, *, since: int = 0) -> tuple[str, int]:
        """The first hit of `find` in the lines from number `since` on, and the next line number."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                for number, line in enumerate(self._lines[seen:], start=seen):
                    hit = find(line)
                    if hit:
                        return hit, number + 1
                seen = len(self._lines)
                if self.process and self.process.poll() is not None:
                    raise TunnelError(f"cloudflared exited with {self.process.returncode} before the tunnel was up")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TunnelError(f"cloudflared: no tunnel after {timeout:.0f}s")
                self._cond.wait(min(left, 0.5))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def begin_stop(self) -> None:
        """SIGTERM: cloudflared takes no new requests and lets open ones finish (--grace-period)."""
        if self.process and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float) -> None:
        """SIGTERM (once: a second SIGTERM ends cloudflared's grace period at once), then wait."""
        if not self.process:
            return
        if self.process.poll() is None:
            self.begin_stop()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class _CloudflaredTunnel:
    """What both kinds of cloudflared tunnel share: start, wait for a line that says the tunnel
    is up (stopping cloudflared if it never comes), and stop."""

    shared_url = False
    public_url = ""
    grace_seconds = 30.0            # cloudflared's default --grace-period
    _proc: _CloudflaredProcess

    def _wait_up(self, timeout: float) -> str:
        raise NotImplementedError

    def start(self, timeout: float) -> str:
        self._proc.start()
        try:
            return self._wait_up(timeout)
        except TunnelError:
            self._proc.stop(5)
            raise

    def _connected(self, timeout: float, since: int = 0) -> None:
        self._proc.wait_for(lambda line: line if CONNECTED_MARKER in line else None, timeout, since=since)

    def alive(self) -> bool:
        return self._proc.alive()

    def begin_stop(self) -> None:
        self._proc.begin_stop()

    def stop(self, timeout: float | None = None) -> None:
        # cloudflared finishes open requests for up to its grace period after SIGTERM.
        self._proc.stop(self.grace_seconds + 15 if timeout is None else timeout)


class QuickTunnel(_CloudflaredTunnel):
    """A `trycloudflare.com` URL for a local port; nothing to set up, a new URL every time."""

    def __init__(self, local_url: str, *, binary: str, log: Callable[[str], None],
                 environ: dict[str, str] | None = None) -> None:
        self.public_url = ""
        self._proc = _CloudflaredProcess(
            binary, ["tunnel", "--no-autoupdate", "--url", local_url],
            cloudflared_env(os.environ if environ is None else environ), log)

    @staticmethod
    def _url_line(line: str) -> str | None:
        match = QUICK_TUNNEL_URL.search(line)
        # cloudflared also names api.trycloudflare.com, the service it asks for a URL.
        if match and not match.group("url").split("//", 1)[1].startswith("api."):
            return match.group("url")
        return None

    def _wait_up(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        url, after = self._proc.wait_for(self._url_line, timeout)
        # The URL is printed before any connection to the edge exists: wait for one.
        self._connected(max(0.0, deadline - time.monotonic()), since=after)
        self.public_url = url
        return url


class NamedTunnel(_CloudflaredTunnel):
    """A tunnel made by `make setup-tunnels`: a fixed hostname, ingress kept by Cloudflare.
    Predecessor and successor connect to the same tunnel; Cloudflare spreads requests over
    both connectors until one disconnects."""

    shared_url = True

    def __init__(self, credential: TunnelCredential, hostname: str, *, binary: str,
                 log: Callable[[str], None], grace_seconds: float = MAX_GRACE_SECONDS,
                 environ: dict[str, str] | None = None) -> None:
        if grace_seconds < 0:
            raise TunnelError(f"the tunnel's grace period must be at least 0 s, not {grace_seconds:g}")
        self.public_url = f"https://{credential.hostname or hostname}"
        # The service may drain for longer than cloudflared allows; its own drain is separate.
        self.grace_seconds = min(float(grace_seconds), MAX_GRACE_SECONDS)
        self._proc = _CloudflaredProcess(
            binary, ["tunnel", "--no-autoupdate", "--grace-period", f"{self.grace_seconds:.0f}s", "run"],
            cloudflared_env(os.environ if environ is None else environ, credential.token), log)

    def _wait_up(self, timeout: float) -> str:
        self._connected(timeout)
        return self.public_url


def choose_tunnel(kind: str, *, label: str, hostname: str, local_url: str, base_domain: str | None,
                  job_log: "JobLog", cloudflared: str | None = None, public_url: str | None = None,
                  grace_seconds: float = MAX_GRACE_SECONDS, allow_quick: bool = False) -> Tunnel:
    """The tunnel for `local_url`. `kind`: `auto` (named when `TUNNELS_JSON` has a token for
    `label`), `named`, `quick` (only with `allow_quick`, for tests), or `none` (`public_url`,
    else the local URL). Every token in `TUNNELS_JSON` is masked in the job log first;
    cloudflared's lines go there."""
    credentials = tunnel_credentials(os.environ.get(TUNNELS_ENV))
    for credential in credentials.values():
        job_log.mask(credential.token)
    credential = credentials.get(label)
    if kind == "auto":
        kind = "named" if credential else "quick"
    if kind == "none":
        return DirectUrl(public_url or local_url)
    if kind == "quick" and not allow_quick:
        raise TunnelError(f"{TUNNELS_ENV} has no tunnel for {label}, and quick tunnels are refused for the "
                          "fleet: they do not carry Server-Sent Events (streamed answers break) and cap "
                          "in-flight requests at 200. Run `make setup-tunnels` and store its TUNNELS_JSON as "
                          "a repository secret, or allow a quick tunnel for a test with --allow-quick-tunnel")
    binary = cloudflared_binary(cloudflared)
    forward = lambda line: job_log.info(f"cloudflared: {line}")  # noqa: E731
    if kind == "named":
        if credential is None:
            raise TunnelError(f"{TUNNELS_ENV} has no tunnel token for {label}: run `make setup-tunnels` "
                              f"and store its TUNNELS_JSON as a repository secret")
        default_host = f"{hostname}.{base_domain}" if base_domain else hostname
        return NamedTunnel(credential, default_host, binary=binary, log=forward, grace_seconds=grace_seconds)
    job_log.warning(QUICK_TUNNEL_WARNING)
    return QuickTunnel(local_url, binary=binary, log=forward)

