"""`llmflow bench search` at a tiny size: real embedded PostgreSQL, Milvus Lite and Kiwi, the
three search paths measured, a JSON report with positive numbers (no timing thresholds)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmflow.bench import bench_app

PATHS = ("ours", "raw_two", "raw_hybrid")


def test_bench_search_reports_every_path_at_every_concurrency(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench_app,
        [
            "search",
            "--sizes",
            "300",
            "--concurrency",
            "1,2",
            "--queries",
            "5",
            "--data-dir",
            str(tmp_path),
            "--time-cap",
            "30",
            "--no-embed-latency",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)

    assert "random unit vectors" in report["vectors"]  # the output says what the vectors are
    assert report["query_embedding"] is None
    (size,) = report["sizes"]
    assert size["size"] == 300
    build = size["build"]
    assert build["reused"] is False and build["seconds"] > 0
    assert build["avg_chars"] > 0 and build["avg_terms"] > 0
    assert (tmp_path / "n300" / "milvus.db").exists()  # built in its own data dir

    assert [row["concurrency"] for row in size["results"]] == [1, 2]
    for row in size["results"]:
        for path in PATHS:
            cell = row[path]
            assert cell["queries"] >= 1
            assert cell["p50_ms"] > 0 and cell["p99_ms"] >= cell["p50_ms"] and cell["qps"] > 0
        for key in (
            "ratio_ours_raw_two_p50",
            "ratio_ours_raw_two_qps",
            "ratio_ours_raw_hybrid_p50",
            "ratio_ours_raw_hybrid_qps",
        ):
            assert row[key] > 0

    # like for like: our results are drawn from the very candidates the raw searches return,
    # and the naive RRF of the two raw searches ranks like Lite's RRFRanker
    agreement = size["agreement_top_k"]
    assert agreement["ours_topk_within_raw_candidates"] >= 0.8
    assert agreement["raw_two_same_topk_as_raw_hybrid"] >= 0.6
    steps = size["results"][0]["ours_mean_steps_ms"]
    assert {"analyze_ms", "dense_ms", "lexical_ms", "total_ms"} <= set(steps)
