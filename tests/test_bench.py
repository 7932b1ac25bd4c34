"""`arena bench` runs end to end: a real model service at each level, then the gateway's overhead.
Speed itself is not asserted here (it belongs to the benchmark's figures, not to a test)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import PROJECT_ROOT


def test_bench_reports_every_level_and_the_gateway_overhead(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", "bench", "--mode", "all", "--levels", "1,2", "--requests-per-stream", "1",
         "--max-tokens", "8", "--gateway-requests", "20", "--json", str(out)],
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
    gateway = report["gateway"]
    assert gateway["direct_p50_ms"] > 0 and gateway["gateway_p50_ms"] > 0
    assert gateway["direct_stream_rps"] > 0 and gateway["gateway_stream_rps"] > 0
    assert "tok/s" in result.stdout and "through the gateway" in result.stdout
