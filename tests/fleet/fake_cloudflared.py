#!/usr/bin/env python3
"""A stand-in for the cloudflared binary in tests: same arguments, same kind of log on stderr.

`tunnel --url URL` prints a quick-tunnel URL in cloudflared's banner; `tunnel run` (token in
TUNNEL_TOKEN) prints "Registered tunnel connection". Both stay up until SIGTERM.

FAKE_CLOUDFLARED_RECORD=path: append argv and whether a token arrived, one JSON line per start.
FAKE_CLOUDFLARED_MODE=fail|silent|leak: exit at once / never announce / print the token.
"""

import json
import os
import signal
import sys
import time


def log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} INF {text}\n")
    sys.stderr.flush()


def main() -> int:
    args = sys.argv[1:]
    mode = os.environ.get("FAKE_CLOUDFLARED_MODE", "")
    token = os.environ.get("TUNNEL_TOKEN", "")
    record = os.environ.get("FAKE_CLOUDFLARED_RECORD")
    if record:
        with open(record, "a") as handle:
            handle.write(json.dumps({"argv": args, "token_given": bool(token),
                                     "token_in_argv": bool(token) and any(token in a for a in args)}) + "\n")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    if args[:1] != ["tunnel"]:
        sys.stderr.write("fake cloudflared: only `tunnel` is supported\n")
        return 2
    if mode == "fail":
        sys.stderr.write("ERR failed to connect to the edge\n")
        return 1
    log("Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way")
    if "--url" in args:
        log("Requesting new quick Tunnel on trycloudflare.com...")
        if mode != "silent":
            log("+--------------------------------------------------------------------------------------------+")
            log("|  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |")
            log("|  https://plain-fuzzy-words-example.trycloudflare.com                                       |")
            log("+--------------------------------------------------------------------------------------------+")
    elif "run" in args:
        if not token:
            sys.stderr.write("ERR Provide either a tunnel token or a tunnel name\n")
            return 1
        if mode == "leak":
            log(f"token is {token}")
        if mode != "silent":
            log("Registered tunnel connection connIndex=0 connection=0000 event=0 ip=198.41.200.13 location=fra01 protocol=quic")
    log("Starting metrics server on 127.0.0.1:20241/metrics")
    deadline = time.monotonic() + 600
    while not stopping and time.monotonic() < deadline:
        time.sleep(0.05)
    log("Initiating graceful shutdown due to signal terminated ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
