#!/usr/bin/env python3
"""A stand-in for the cloudflared binary in tests: its flags, its refusals, its log lines in order.

Follows cloudflared's own source (github.com/cloudflare/cloudflared):
- flags are parsed like urfave/cli does: an unknown flag is "Incorrect Usage: flag provided but
  not defined: -NAME" and exit 1; `--grace-period` is a Go duration ("30s", "3m", "1m30s"),
  default 30s (cmd/cloudflared/tunnel/cmd.go);
- a grace period above 3 minutes is refused at start-up: `Couldn't start tunnel
  error="grace-period must be equal or less than 3m0s"` (tunnel/configuration.go,
  `connection.MaxGracePeriod`);
- `tunnel run` needs a token (TUNNEL_TOKEN); `tunnel --url URL` asks trycloudflare.com for a quick
  tunnel and prints its URL in a box (tunnel/quick_tunnel.go) before any edge connection;
- start-up lines: Version, GOOS, Settings, Generated Connector ID, Initial protocol, Starting
  metrics server on 127.0.0.1:20241/metrics, then one "Registered tunnel connection" per
  connection (connection/observer.go), four in all;
- SIGTERM: "Initiating graceful shutdown due to signal terminated ...", then in-flight requests
  get up to the grace period (a second SIGTERM ends it at once), then exit 0.

The test controls it through the wrapper `make_fake()` writes (cloudflared's children see an
allow-listed environment, so the settings are baked into the wrapper):
    mode "fail": the edge refuses (exit 1); "silent": never registers a connection, and for a
    quick tunnel never prints a URL; "no-connection": a quick tunnel prints its URL but never
    connects; "leak": prints the token (to test masking); "busy": after SIGTERM, in-flight
    requests take the whole grace period.
    connect_delay: seconds between the URL (or start-up) and the first registered connection.
    record: a file that gets one JSON line per start: argv, environment names, token seen.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import time
import uuid
from pathlib import Path

MAX_GRACE = 180.0
BOOL_FLAGS = {"no-autoupdate"}
VALUE_FLAGS = {"grace-period", "url", "metrics", "loglevel", "protocol", "edge-ip-version", "token"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def log(level: str, text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {level} {text}\n")
    sys.stderr.flush()


def parse_duration(text: str) -> float | None:
    """Go's time.ParseDuration for the units cloudflared users write; None when invalid."""
    if text in ("0", ""):
        return 0.0 if text == "0" else None
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            return None
        pos = match.end()
        total += float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[match.group(2)]
    return total if pos == len(text) else None


def parse(args: list[str]) -> tuple[dict[str, str], list[str]] | str:
    """Flags (before and after `tunnel`) and the rest, or the usage error urfave/cli prints."""
    flags: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and arg != "-":
            name, _, value = arg.lstrip("-").partition("=")
            if name in BOOL_FLAGS:
                flags[name] = "true"
            elif name in VALUE_FLAGS:
                if not value:
                    i += 1
                    if i >= len(args):
                        return f"Incorrect Usage: flag needs an argument: -{name}"
                    value = args[i]
                flags[name] = value
            else:
                return f"Incorrect Usage: flag provided but not defined: -{name}"
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def main() -> int:
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_CLOUDFLARED_MODE", "")
    connect_delay = float(os.environ.get("FAKE_CLOUDFLARED_CONNECT_DELAY", "0.2"))
    token = os.environ.get("TUNNEL_TOKEN", "")
    record = os.environ.get("FAKE_CLOUDFLARED_RECORD")
    if record:
        visible = sorted(k for k in os.environ if not k.startswith("FAKE_CLOUDFLARED_"))
        with open(record, "a") as handle:
            handle.write(json.dumps({"argv": args, "env": visible, "token_given": bool(token),
                                     "token_in_argv": bool(token) and any(token in a for a in args)}) + "\n")
    parsed = parse(args)
    if isinstance(parsed, str):
        sys.stderr.write(parsed + "\n")
        return 1
    flags, rest = parsed
    if rest[:1] != ["tunnel"]:
        sys.stderr.write("fake cloudflared: only `tunnel` is supported\n")
        return 2
    grace = parse_duration(flags.get("grace-period", "30s"))
    if grace is None:
        sys.stderr.write(f'Incorrect Usage: invalid value "{flags["grace-period"]}" for flag -grace-period: '
                         "parse error\n")
        return 1
    quick = "url" in flags and rest[1:2] != ["run"]
    if not quick and rest[1:2] != ["run"]:
        sys.stderr.write("fake cloudflared: `tunnel run` or `tunnel --url URL`\n")
        return 2

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    if quick:
        log("INF", "Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick "
                   "way to experiment and try it out. However, be aware that these account-less Tunnels have no "
                   "uptime guarantee, are subject to the Cloudflare Online Services Terms of Use "
                   "(https://www.cloudflare.com/website-terms/), and Cloudflare reserves the right to investigate "
                   "your use of Tunnels for violations of such terms. If you intend to use Tunnels in production "
                   "you should use a pre-created named tunnel by following: "
                   "https://developers.cloudflare.com/cloudflare-one/connections/connect-apps")
        log("INF", "Requesting new quick Tunnel on trycloudflare.com...")
        if mode == "fail":
            log("ERR", 'Couldn\'t start tunnel error="failed to request quick Tunnel: Post '
                       '\\"https://api.trycloudflare.com/tunnel\\": dial tcp: i/o timeout"')
            return 1
        if mode != "silent":
            log("INF", "+--------------------------------------------------------------------------------------------+")
            log("INF", "|  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |")
            log("INF", "|  https://plain-fuzzy-words-example.trycloudflare.com                                       |")
            log("INF", "+--------------------------------------------------------------------------------------------+")
    elif not token and "token" not in flags:
        log("ERR", '"cloudflared tunnel run" requires the ID or name of the tunnel to run as the last command '
                   "line argument or in the configuration file.")
        return 1
    log("INF", "Version 2026.8.0 (Checksum 0000000000000000000000000000000000000000000000000000000000000000)")
    log("INF", "GOOS: linux, GOVersion: go1.24.6, GoArch: amd64")
    log("INF", f"Settings: map[{' '.join(f'{k}:{v}' for k, v in sorted(flags.items()))}]")
    if grace > MAX_GRACE:
        log("ERR", 'Couldn\'t start tunnel error="grace-period must be equal or less than 3m0s"')
        return 1
    if mode == "leak":
        log("INF", f"token is {token}")
    log("INF", f"Generated Connector ID: {uuid.uuid4()}")
    log("INF", "Initial protocol quic")
    if mode == "fail":
        log("ERR", "Unable to establish connection with Cloudflare edge error=\"TLS handshake timeout\"")
        return 1
    log("INF", "Starting metrics server on 127.0.0.1:20241/metrics")
    if mode not in ("silent", "no-connection"):
        deadline = time.monotonic() + connect_delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.02)
        for index, location in enumerate(("fra01", "ams01", "fra08", "ams16")):
            log("INF", f"Registered tunnel connection connIndex={index} connection={uuid.uuid4()} "
                       f"event=0 ip=198.41.200.{13 + index} location={location} protocol=quic")
    deadline = time.monotonic() + 600
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.02)
    log("INF", "Initiating graceful shutdown due to signal terminated ...")
    if mode == "busy":
        # In-flight requests keep the connector up for the grace period (or until a second SIGTERM).
        ends = time.monotonic() + grace
        while len(stopping) < 2 and time.monotonic() < ends:
            time.sleep(0.02)
    log("INF", "Tunnel server stopped")
    return 0


def make_fake(directory: Path, *, mode: str = "", record: Path | None = None, connect_delay: float = 0.2,
              name: str = "cloudflared") -> str:
    """An executable `cloudflared` in `directory` that runs this fake with these settings."""
    settings = {"FAKE_CLOUDFLARED_MODE": mode, "FAKE_CLOUDFLARED_CONNECT_DELAY": str(connect_delay)}
    if record is not None:
        settings["FAKE_CLOUDFLARED_RECORD"] = str(record)
    exports = "".join(f"export {key}='{value}'\n" for key, value in settings.items())
    path = Path(directory) / name
    path.write_text(f"#!/bin/sh\n{exports}exec '{sys.executable}' '{Path(__file__).resolve()}' \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
