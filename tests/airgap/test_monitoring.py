"""Alert rules (promtool check + unit tests) and dashboards."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path("platform/monitoring/rules/llmflow.rules.yaml")
RULE_TESTS = Path("platform/monitoring/tests/llmflow.rules.test.yaml")
DASHBOARDS = Path("platform/monitoring/dashboards")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    return path


@pytest.mark.parametrize(
    ("command", "target"),
    [("check", RULES), ("test", RULE_TESTS)],
    ids=["check-rules", "rule-unit-tests"],
)
def test_promtool_rules(promtool: str, repo_root: Path, command: str, target: Path) -> None:
    out = subprocess.run(
        [promtool, command, "rules", str(repo_root / target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_seed_threshold_has_an_alert(repo_root: Path) -> None:
    rules = yaml.safe_load((repo_root / RULES).read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    expected = {
        "LLMResponseLatencyHigh": "warning",
        "LLMThroughputLow": "critical",
        "EmbeddingLatencyHigh": "warning",
        "RerankLatencyHigh": "warning",
        "GPUUtilisationHigh": "warning",
        "GPUMemoryCritical": "critical",
        "APIErrorRateHigh": "warning",
        "APIAvailabilityLow": "critical",
        "MilvusQueryLatencyHigh": "warning",
        "Neo4jQueryLatencyHigh": "warning",
        "VectorIndexNearCapacity": "warning",
        "TenantTokenSpike": "critical",
        "ModelServingPodCrashLooping": "critical",
        "APIErrorRateCritical": "critical",
        "HPAAtMaximum": "warning",
        "GPUOverheating": "critical",
        "GatewayBackendDown": "warning",
        "GatewayAllBackendsDown": "critical",
    }
    assert {k: alerts[k]["labels"]["severity"] for k in expected if k in alerts} == expected


def test_dashboards_cover_both_vllm_cache_metric_names(repo_root: Path) -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in (repo_root / DASHBOARDS).glob("*.json")}
    assert set(boards) == {"platform-overview", "llm-serving", "retrieval", "gpu", "tenant-usage"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    exprs = " ".join(t["expr"] for p in boards["llm-serving"]["panels"] for t in p["targets"])
    assert "vllm:kv_cache_usage_perc" in exprs and "vllm:gpu_cache_usage_perc" in exprs
