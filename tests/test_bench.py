"""`arena bench` runs end to end: a real model service at each level, then the gateway's overhead.
Speed itself is not asserted here (it belongs to the benchmark's figures, not to a test)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import PROJECT_ROOT


def test_bench_reports_every_level_the_gateway_overhead_and_overload(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "--mode", "service,gateway,overload", "--levels", "1,2", "--requests-per-stream", "1",
         "--max-tokens", "8", "--gateway-requests", "20", "--overload-seconds", "1", "--cold-starts", "1",
         "--json", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    levels = report["service"]["levels"]
    assert [level["streams"] for level in levels] == [1, 2]
    for level in levels:
        assert level["complete"] == level["requests"] == level["streams"]
        assert 0 < level["tokens"] <= 8 * level["requests"]
        assert level["tokens_per_s"] > 0 and 0 < level["ttft_p50_ms"] <= level["latency_p99_ms"]
    assert report["service"]["ratio_2_to_1"] > 0
    # Both engines, the first one's figures also at the top level.
    engines = report["service"]["engines"]
    assert list(engines) == ["llama-cpp-python", "llama-server"]
    assert engines["llama-cpp-python"]["levels"] == levels
    server_levels = engines["llama-server"]["levels"]
    assert [level["streams"] for level in server_levels] == [1, 2]
    assert all(level["complete"] == level["requests"] and level["tokens_per_s"] > 0 for level in server_levels)
    for engine in engines.values():
        assert len(engine["cold_start_runs_s"]) == 1 and 0 < engine["cold_start_s"] < 120
    assert "Cold start" in result.stdout
    gateway = report["gateway"]
    assert gateway["direct_p50_ms"] > 0 and gateway["gateway_p50_ms"] > 0
    assert gateway["direct_stream_rps"] > 0 and gateway["gateway_stream_rps"] > 0
    assert "tok/s" in result.stdout and "through the gateway" in result.stdout
    overload = report["overload"]
    assert overload["without_buffer"]["completed"] > 0 and overload["with_buffer"]["completed"] > 0
    assert "with buffer" in result.stdout


def test_fleet_benchmarks_report_every_figure(tmp_path):
    """The speed benchmarks of issue #14 at their smallest: cores shared (two plans of the
    three), the conversation workload with cache and affinity off/on, the fleet under rising
    load, a council through the fleet and n > 1 choices."""
    out, chart = tmp_path / "fleet.json", tmp_path / "fleet.png"
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "--mode", "cores,conversations,fleet,modes,choices",
         "--plans", "fixed,shared", "--tries", "1", "--pair-tokens", "8", "--long-prompts", "2",
         "--conversations", "3", "--turns", "2", "--concurrency", "2", "--answer-tokens", "8",
         "--fleet-levels", "1,2", "--seconds", "2", "--council-runs", "1", "--council-tokens", "8",
         "--choices-n", "2", "--choices-repetitions", "1", "--choices-tokens", "4",
         "--json", str(out), "--chart", str(chart)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    cores = report["cores"]
    assert set(cores["machine"]) == set(cores["fleet"]) and "before" not in cores
    assert all(m["alone_tokens_per_s"] > 0 for m in cores["machine"].values())
    for plan in ("fixed", "shared"):
        pair = cores[plan]
        assert set(pair["alone_tokens_per_s"]) == set(cores["fleet"]) and len(pair["together_tokens_per_s"]) == 1
        assert all(v > 0 for v in pair["alone_in_fleet_share"].values())
        assert pair["two_instances_s"] > 0
        assert len(pair["together_overlap_s"]) == 1 and set(pair["goals"]) == {
            "alone_at_least_0.9_of_machine", "together_at_least_0.4_of_machine", "two_instances_not_slower_than_one"}
    assert cores["tries"] == 1 and len(cores["load_average"]["start"]) == 3
    assert "alone in the fleet / alone on the machine, shared" in result.stdout
    talk = report["conversations"]
    for mode in ("off", "on"):
        assert talk[mode]["requests"] == 6 and talk[mode]["failed"] == 0
        assert talk[mode]["later_turns_prompt_tokens"] > 0 and talk[mode]["later_turns_ttft_p50_ms"] > 0
    assert talk["on"]["later_turns_cached_share"] > 0.5  # each conversation's history comes back from cache
    levels = report["fleet"]["levels"]
    assert [r["concurrency"] for r in levels] == [1, 2] and all(r["completed"] > 0 for r in levels)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "turn2+ cached" in result.stdout and "TTFT p50" in result.stdout
    council = report["modes"]["runs"]
    assert len(council) == 1 and 0 < council[0]["slowest_s"] <= council[0]["sum_s"]
    choices = report["choices"]
    assert choices["n"] == 2 and choices["prompt_tokens"] > 100 and choices["n2_seconds"] > 0
    assert "median wall / slowest answer" in result.stdout and "x n=1" in result.stdout


def test_two_answers_that_never_overlap_count_zero_for_the_one_that_waited():
    """`arena bench cores` counts speed only while both answers stream; the "0/0" tries of the
    last round were two answers one after the other (the waiting one made no progress while the
    other ran), which the window left empty for both."""
    from services.bench_cores import together_rates
    from services.bench_support import StreamResult

    first, later = StreamResult(stamps=[1.0, 1.1, 1.2, 1.3]), StreamResult(stamps=[2.0, 2.5, 3.0])
    assert together_rates(first, later) == (first.rate(), 0.0, 0.0)
    assert together_rates(later, first) == (0.0, first.rate(), 0.0)
    a, b = StreamResult(stamps=[1.0, 1.2, 1.4, 1.6]), StreamResult(stamps=[1.1, 1.2, 1.3, 1.4, 1.5, 2.0])
    rate_a, rate_b, overlap = together_rates(a, b)   # both streamed from 1.1 to 1.6
    assert round(overlap, 6) == 0.5 and round(rate_a, 6) == 5.0 and round(rate_b, 6) == 10.0
