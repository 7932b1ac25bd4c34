"""What the benchmarks share: a local fleet or one model service on free ports, and one streamed
chat request measured from the client's side."""

from __future__ import annotations

import json
import socket
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import httpx

from shared.catalogue import Catalogue
from shared.core_share import CoreShare
from shared.local_fleet import LocalFleet
from shared import paths
from shared.processes import ChildProcess, free_port

LOG_DIR = paths.log_dir("bench")


@dataclass
class StreamResult:
    status: int = 0
    started: float = field(default_factory=time.perf_counter)
    stamps: list[float] = field(default_factory=list)   # arrival time of each content chunk
    text: str = ""
    usage: dict | None = None
    finish_reason: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.done and self.finish_reason in ("stop", "length")

    @property
    def ttft(self) -> float | None:
        return self.stamps[0] - self.started if self.stamps else None

    @property
    def cached_tokens(self) -> int:
        return ((self.usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens", 0)

    def rate(self, start: float | None = None, end: float | None = None) -> float:
        """Chunks per second between its first and last chunk, or within [start, end]."""
        stamps = [t for t in self.stamps if (start is None or t >= start) and (end is None or t <= end)]
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return 0.0
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict, *, path: str = "/v1/chat/completions",
                      headers: dict[str, str] | None = None) -> StreamResult:
    """POST a streamed request (usage included) and record what arrives; never raises on an
    HTTP error status (it is in `status`)."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    return await read_stream(client, url + path, body, headers)


async def read_stream(client: httpx.AsyncClient, url: str, body: dict | None,
                      headers: dict[str, str] | None = None) -> StreamResult:
    """POST and read an SSE stream of completion chunks (also the arena's battle sides)."""
    result = StreamResult()
    parts: list[str] = []
    async with client.stream("POST", url, json=body, headers=headers) as response:
        result.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            return result
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                result.done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    break
                for choice in chunk.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                    if piece:
                        result.stamps.append(time.perf_counter())
                        parts.append(piece)
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
                if chunk.get("usage"):
                    result.usage = chunk["usage"]
    result.text = "".join(parts)
    return result


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def free_port_block(size: int) -> int:
    """A port p with p .. p+size-1 all free (the local fleet numbers a model's instances so)."""
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + size):
                with closing(socket.socket()) as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no block of free ports")


@contextmanager
def running_service(catalogue: Catalogue, model: str, name: str, *args: str) -> Iterator[str]:
    """One model service (`arena serve MODEL *args`) on a free port; yields its URL once ready."""
    port = free_port()
    service = ChildProcess(name, ["serve", model, "--port", str(port), *args], port=port,
                           log_path=LOG_DIR / f"{name}.log", catalogue=catalogue.path)
    try:
        service.start().wait_ready()
        yield service.url
    finally:
        service.stop()


@contextmanager
def running_fleet(catalogue: Catalogue, plan: dict[str, int], name: str, *, shares: list[CoreShare] | None = None,
                  env: dict[str, str] | None = None) -> Iterator[str]:
    """The local fleet of `plan` on free ports (so it never meets a running `make run`), once
    the gateway has every instance ready; yields the gateway's URL."""
    models = {key: spec.model_copy(update={"port": free_port_block(plan.get(key, 1))})
              for key, spec in catalogue.models.items()}
    port = free_port()
    fleet = LocalFleet(catalogue.model_copy(update={"models": models}), plan, host="127.0.0.1", port=port,
                       log_dir=LOG_DIR / name, shares=shares, env=env)
    try:
        fleet.start()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = client.get(url + "/api/status").json()["models"]
                if all(m["ready_instances"] == plan[m["key"]] for m in status if m["key"] in plan):
                    break
                time.sleep(0.2)
        yield url
    finally:
        fleet.stop()

