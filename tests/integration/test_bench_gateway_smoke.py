"""`llmflow bench gateway` end to end at toy sizes: real processes (scripted upstream,
`llmflow serve` on an embedded PostgreSQL), the aiohttp load generator, staggered workers,
CPU pinning and the soak's RSS series."""

from __future__ import annotations

import gc
import os

from llmflow.bench_gateway import GatewayBenchOptions, run_gateway_bench


def test_bench_gateway_measures_both_paths() -> None:
    cpus = os.sched_getaffinity(0)
    frozen = gc.get_freeze_count()
    result = run_gateway_bench(
        GatewayBenchOptions(
            concurrency=[1, 4],
            requests=24,
            rounds=2,
            streams=3,
            upstream_latency_ms=20,
            pin=True,
            soak_s=2.0,
            soak_streams=5,
        )
    )
    assert [level["concurrency"] for level in result["levels"]] == [1, 4]
    for level in result["levels"]:
        assert level["errors"] == {"direct": 0, "gateway": 0}, result["error_samples"]
        assert level["requests"] == 24
        # the upstream answers after 20 ms: both paths wait at least that long
        assert level["direct_p50_ms"] >= 20 and level["gateway_p50_ms"] >= 20
    assert result["ttft"]["gateway_p50_ms"] is not None
    soak = result["soak"]
    assert soak["errors"] == 0 and soak["completed"] > 0
    assert soak["gateway_rss_mb_series"] and soak["gateway_rss_mb_after"] > 0
    if len(cpus) >= 2:
        assert result["pinned"]["gateway"] and result["pinned"]["upstream_load_and_database"]
    assert os.sched_getaffinity(0) == cpus  # the caller is not left pinned
    # nor with its collector off or its objects frozen
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert set(result["pii_guard_ms_per_kb"]) == {"1KB", "4KB", "16KB"}
