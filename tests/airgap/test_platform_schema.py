"""platform.yaml: the bill of materials loads, is complete, and its schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmflow_airgap.errors import PlatformFileError
from llmflow_airgap.platform import Profile, load_platform, platform_json_schema

ARCHITECTURE_COMPONENTS = {
    # ARCHITECTURE §2 -> the release(s) that provide it
    "Dify": {"dify"},
    "APISIX": {"apisix"},
    "Keycloak": {"keycloak"},
    "OPA": {"opa"},
    "Milvus": {"milvus"},
    "Neo4j": {"neo4j"},
    "PostgreSQL": {"postgresql", "cloudnative-pg"},
    "Redis/Valkey": {"valkey"},
    "S3 object store": {"object-store"},
    "OpenSearch": {"opensearch"},
    "vLLM": {"vllm"},
    "TEI": {"tei-embedding", "tei-rerank"},
    "Unstructured / ETL worker": {"unstructured-api", "llmflow-ingest"},
    "Langfuse + ClickHouse": {"langfuse", "clickhouse-operator"},
    "MLflow": {"mlflow"},
    "LLaMA-Factory": {"llama-factory"},
    "glue services": {"llmflow-glue", "llmflow-ingest"},
    "Prometheus/Grafana": {"kube-prometheus-stack"},
    "NVIDIA GPU operator": {"gpu-operator"},
}
SEED_NAMESPACES = {
    "llmflow-system",
    "llmflow-data",
    "llmflow-inference",
    "llmflow-etl",
    "llmflow-mlops",
}


def test_every_architecture_component_is_in_the_bom(repo_root: Path) -> None:
    platform = load_platform(repo_root / "platform" / "platform.yaml")
    names = {c.name for c in platform.components}
    missing = {what for what, releases in ARCHITECTURE_COMPONENTS.items() if not releases <= names}
    assert not missing, f"components missing from platform.yaml: {sorted(missing)}"
    assert {ns.name for ns in platform.namespaces} >= SEED_NAMESPACES


def test_models_are_pinned_and_placed_as_in_seed_004(repo_root: Path) -> None:
    platform = load_platform(repo_root / "platform" / "platform.yaml")
    models = {m.huggingface_repo: m for c in platform.components for m in c.models}
    assert {"BAAI/bge-m3", "BAAI/bge-reranker-v2-m3"} <= set(models)
    assert all(len(m.revision) == 40 for m in models.values())
    # seed 004 §2.6: a ~70B model on 4 GPUs is not part of the one-GPU profile
    big = [m for m in models.values() if "72B" in m.huggingface_repo]
    assert big and all(Profile.MINIMAL not in m.profiles for m in big)


def test_install_order_respects_dependencies(repo_root: Path) -> None:
    platform = load_platform(repo_root / "platform" / "platform.yaml")
    order = [c.name for c in platform.install_order()]
    for comp in platform.components:
        for dep in comp.depends_on:
            assert order.index(dep) < order.index(comp.name), (dep, comp.name)


def test_committed_json_schema_matches_the_model(repo_root: Path) -> None:
    committed = json.loads((repo_root / "platform" / "platform.schema.json").read_text())
    assert committed == platform_json_schema(), (
        "run: llmflow-airgap schema -o platform/platform.schema.json"
    )


def _broken(tmp_path: Path, repo_root: Path, mutate: object) -> Path:
    data = yaml.safe_load((repo_root / "platform" / "platform.yaml").read_text())
    mutate(data)  # type: ignore[operator]
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda d: d["components"][1].update(dependsOn=["postgresql"]), "dependency cycle"),
        (lambda d: d["components"][0].update(namespace="nowhere"), "is not declared"),
        (lambda d: d["components"][0]["images"].append("nvcr.io/nvidia/x:latest"), "pinned"),
        (lambda d: d["components"][0]["chart"].update(version="^1.0"), "exact semver"),
        (lambda d: d["components"][0].update(colour="blue"), "colour"),
        (lambda d: d["manifests"].append({"path": "x.yaml", "profiles": ["huge"]}), "huge"),
    ],
    ids=["cycle", "namespace", "latest-image", "version-range", "unknown-field", "profile"],
)
def test_schema_rejects_broken_boms(
    tmp_path: Path, repo_root: Path, mutation: object, message: str
) -> None:
    path = _broken(tmp_path, repo_root, mutation)
    with pytest.raises(PlatformFileError, match=message):
        load_platform(path)


def test_ha_only_manifests_stay_out_of_smaller_profiles(repo_root: Path) -> None:
    platform = load_platform(repo_root / "platform" / "platform.yaml")
    ha_only = "platform/manifests/ha-autoscaling.yaml"
    assert ha_only in platform.manifests_for(Profile.HA)
    assert ha_only not in platform.manifests_for(Profile.MINIMAL)
    assert ha_only not in platform.manifests_for(Profile.STANDARD)
    # every profile still gets namespaces and default-deny network policies
    for profile in Profile:
        assert "policies/k8s/networkpolicies/*.yaml" in platform.manifests_for(profile)
