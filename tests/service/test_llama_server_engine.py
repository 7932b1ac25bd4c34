"""What is particular to the llama-server engine: the child's settings and its report in our
`/health/details`, our bounds applied before anything reaches it, a dead child reported as an
error, drain on SIGTERM stopping the child too, and no orphan when our process is killed. (The
OpenAI SDK tests of test_openai_api, test_tools and test_choices_and_logprobs run on both
engines.)"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx

from tests.harness import assert_openai_error, start_service, wait_until
from tests.service.conftest import require_llama_server
from tests.service.test_health_and_drain import active_slots, drain_two_streams, stream_chat

MODEL = "smollm2-135m"


def children(pid: int) -> list[int]:
    """The direct children of `pid` (every thread's), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def llama_server_child(pid: int) -> int:
    (child,) = [c for c in children(pid) if Path(f"/proc/{c}/exe").resolve().name == "llama-server"]
    return child


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def start_on_llama_server(parallel: int):
    """Our own service on the llama-server engine (for tests that stop or kill it), and its child."""
    require_llama_server()
    proc = start_service(MODEL, "--engine", "llama-server", "--parallel", str(parallel))
    return proc, llama_server_child(proc.process.pid)


def chat(**overrides) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **overrides}


def test_the_child_runs_the_catalogue_s_settings_on_loopback_with_a_key(smollm_server):
    child = llama_server_child(smollm_server.process.pid)
    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    options = dict(zip(argv[1::2], argv[2::2]))
    assert options[b"--host"] == b"127.0.0.1" and options[b"--parallel"] == b"4"
    assert options[b"--ctx-size"] == str(2048 * 4).encode()  # 2048 per slot, as in process
    assert b"--metrics" in argv and b"--slots" in argv
    environ = dict(line.split(b"=", 1) for line in Path(f"/proc/{child}/environ").read_bytes().split(b"\0") if line)
    assert environ[b"LLAMA_API_KEY"]  # its port answers only us
    assert not [k for k in environ if k.startswith(b"ARENA_")]  # nothing of ours it does not need
    port = int(options[b"--port"])
    assert httpx.get(f"http://127.0.0.1:{port}/slots", timeout=5).status_code == 401


def test_health_details_come_from_the_child_s_slots_and_metrics(smollm_server):
    details = httpx.get(smollm_server.url + "/health/details", timeout=5).json()
    assert details["engine"] == "llama-server" and details["status"] == "ok"
    assert details["slots"] == {"total": 4, "active": 0, "free": 4}
    assert details["n_ctx"] == 2048 and details["queue"]["max"] == 4
    before = details["throughput"]["tokens_generated"]
    results: list = []
    workers = [threading.Thread(target=stream_chat, args=(smollm_server.url, 120, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    wait_until(lambda: active_slots(smollm_server.url) == 2, 60, what="2 slots busy in the child's /slots")
    for worker in workers:
        worker.join(timeout=120)
    assert [kind for kind, _ in results] == ["ok", "ok"], results
    after = httpx.get(smollm_server.url + "/health/details", timeout=5).json()
    generated = sum(answer["usage"]["completion_tokens"] for _, answer in results)
    assert after["throughput"]["tokens_generated"] >= before + generated  # the child's own counter
    assert after["throughput"]["requests_completed"] >= 2 and after["slots"]["active"] == 0
    metrics = httpx.get(smollm_server.url + "/metrics", timeout=5).text
    assert 'arena_service_slots_total{model="smollm2-135m"} 4.0' in metrics


def test_our_bounds_apply_before_the_child_sees_the_request(smollm_server):
    url = smollm_server.url + "/v1/chat/completions"
    long_prompt = "word " * 3000
    assert_openai_error(httpx.post(url, json=chat(messages=[{"role": "user", "content": long_prompt}]), timeout=30),
                        400, "context_length_exceeded")
    assert_openai_error(httpx.post(url, json=chat(max_tokens=5000), timeout=30), 400, param="max_tokens")
    assert_openai_error(httpx.post(url, content=b"x" * (5 * 1024 * 1024), timeout=30), 413)
    assert_openai_error(httpx.post(url, json=chat(model="nope"), timeout=30), 404, "model_not_found")
    ignored = httpx.post(url, json=chat(temperature=0, surprise=1), timeout=60)
    assert ignored.status_code == 200 and ignored.headers["X-Arena-Ignored-Params"] == "surprise"


def test_a_full_queue_is_503_queue_full(smollm_server):
    # 4 slots and a queue of 4: the ninth concurrent choice is refused at once.
    results: list = []
    workers = [threading.Thread(target=stream_chat, args=(smollm_server.url, 200, results)) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        # Four slots busy: the other four, started at the same moment, are in, and the first
        # answers (200 tokens) are seconds from done. The ninth goes in now, while 8 are in
        # flight (not once the first ones are done: then it fits). The child's own count of
        # deferred requests is a sampled metric, too late to wait on.
        wait_until(lambda: active_slots(smollm_server.url) == 4, 60, what="4 slots busy")
        refused = httpx.post(smollm_server.url + "/v1/chat/completions", json=chat(), timeout=30)
        assert_openai_error(refused, 503, "queue_full")
    finally:
        for worker in workers:
            worker.join(timeout=300)
    assert [kind for kind, _ in results] == ["ok"] * 8, results


def test_a_dead_child_is_reported_not_hidden():
    proc, child = start_on_llama_server(1)
    try:
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: httpx.get(proc.url + "/health", timeout=5).json()["status"] == "error", 30,
                   what="/health to say error")
        health = httpx.get(proc.url + "/health", timeout=5)
        assert health.status_code == 503 and "llama-server exited" in health.json()["error"]
        assert_openai_error(httpx.post(proc.url + "/v1/chat/completions", json=chat(), timeout=30), 503,
                            "model_load_failed")
    finally:
        proc.stop()


def test_sigterm_drains_then_stops_the_child():
    proc, child = start_on_llama_server(2)
    try:
        drain_two_streams(proc)  # the same drain as the in-process engine's test checks
        wait_until(lambda: not alive(child), 30, what="the llama-server child to exit")
    finally:
        proc.stop()


def test_sigkill_of_our_process_leaves_no_orphan():
    proc, child = start_on_llama_server(1)
    try:
        os.kill(proc.process.pid, signal.SIGKILL)  # no handler runs: only the kernel can stop the child
        proc.wait_exit(timeout=10)
        wait_until(lambda: not alive(child), 30, what="the orphaned llama-server to be stopped")
    finally:
        proc.stop()
