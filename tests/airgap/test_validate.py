"""`llmflow-airgap validate` against the real chart reference copies, and on broken files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmflow_airgap.cli import main
from llmflow_airgap.findings import Check
from llmflow_airgap.validate import Report, ValidationInput, validate


def _run(root: Path, charts_dir: Path) -> Report:
    return validate(
        ValidationInput(
            repo_root=root, platform_file=root / "platform" / "platform.yaml", charts_dir=charts_dir
        )
    )


def test_distribution_has_no_findings(repo_root: Path, charts_dir: Path) -> None:
    report = _run(repo_root, charts_dir)
    assert report.findings == [], "\n".join(str(f) for f in report.findings)
    assert report.checked_files > 80


def test_cli_exit_code_is_zero_when_clean(
    repo_root: Path, charts_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "validate",
            "--platform",
            str(repo_root / "platform" / "platform.yaml"),
            "--charts-dir",
            str(charts_dir),
        ]
    )
    assert code == 0, capsys.readouterr().out


def _edit(path: Path, change: object) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="module")
def broken_report(distribution_copy: Path, charts_dir: Path) -> Report:
    """One validation run over a copy with one defect of each kind planted in it."""
    hv = distribution_copy / "helm-values"
    _edit(hv / "valkey" / "values.yaml", lambda d: d["image"].update(tag="latest"))
    _edit(
        hv / "keycloak" / "values.yaml", lambda d: d["database"].update(password="Hunter2-Hunter2")
    )
    _edit(hv / "dify" / "values.yaml", lambda d: d["api"].update(replicaz=3))
    _edit(
        hv / "neo4j" / "values.yaml",
        lambda d: d["services"]["neo4j"]["cleanup"].update(
            image={"registry": "docker.io", "repository": "bitnamilegacy/kubectl", "tag": "1.33"}
        ),
    )
    _edit(
        hv / "milvus" / "values.yaml",
        lambda d: d["attu"].update(image={"repository": "zilliz/attu", "tag": "v2.5.3"}),
    )
    _edit(hv / "vllm" / "values.yaml", lambda d: d["routerSpec"].update(routingLogic="random"))
    _edit(
        hv / "opa" / "values-airgap.yaml",
        lambda d: d["image"].update(repository="docker.io/openpolicyagent/opa"),
    )
    _edit(
        hv / "langfuse" / "values.yaml",
        lambda d: d["langfuse"]["additionalEnv"].append(
            {"name": "LANGFUSE_INIT_USER_PASSWORD", "value": "changeme-now"}
        ),
    )
    netpol = distribution_copy / "policies" / "k8s" / "networkpolicies" / "llmflow-etl.yaml"
    docs = list(yaml.safe_load_all(netpol.read_text()))
    docs[0]["spec"]["policyTypes"] = "Ingress"  # must be a list
    netpol.write_text(yaml.safe_dump_all(docs))
    return _run(distribution_copy, charts_dir)


def _has(report: Report, check: Check, file_part: str, location_part: str = "") -> bool:
    return any(
        f.check == check
        and file_part in f.file
        and (location_part in f.location or location_part in f.message)
        for f in report.findings
    )


@pytest.mark.parametrize(
    ("check", "file_part", "location_part"),
    [
        (Check.LATEST_TAG, "valkey/values.yaml", "image"),
        (Check.INLINE_SECRET, "keycloak/values.yaml", "database.password"),
        (Check.UNKNOWN_KEY, "dify/values.yaml", "api.replicaz"),
        (Check.BITNAMI_LEGACY, "neo4j/values.yaml", "services.neo4j.cleanup.image"),
        (Check.IMAGE_NOT_IN_BOM, "milvus/values.yaml", "attu.image"),
        (Check.VALUES_SCHEMA, "vllm/values.yaml", "routingLogic"),
        (Check.IMAGE_NOT_MIRRORED, "opa/values-airgap.yaml", "image"),
        (Check.INLINE_SECRET, "langfuse/values.yaml", "additionalEnv"),
        (Check.MANIFEST, "networkpolicies/llmflow-etl.yaml", "NetworkPolicy/default-deny"),
    ],
    ids=[
        "latest",
        "inline-secret",
        "unknown-key",
        "bitnamilegacy",
        "not-in-bom",
        "values-schema",
        "not-mirrored",
        "env-secret",
        "manifest",
    ],
)
def test_each_planted_defect_is_reported(
    broken_report: Report, check: Check, file_part: str, location_part: str
) -> None:
    text = "\n".join(str(f) for f in broken_report.findings)
    assert _has(broken_report, check, file_part, location_part), text


def test_nothing_else_is_reported_for_the_planted_defects(broken_report: Report) -> None:
    planted = (
        "valkey/",
        "keycloak/",
        "dify/",
        "neo4j/",
        "milvus/",
        "vllm/",
        "opa/",
        "langfuse/",
        "llmflow-etl.yaml",
    )
    unexpected = [
        f
        for f in broken_report.findings
        if not any(p in f.file or p in f.location for p in planted)
        and f.check != Check.VALUES_SCHEMA
    ]
    assert unexpected == []


def test_cli_fails_on_findings(
    distribution_copy: Path,
    charts_dir: Path,
    broken_report: Report,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "validate",
            "--platform",
            str(distribution_copy / "platform" / "platform.yaml"),
            "--charts-dir",
            str(charts_dir),
            "--json",
        ]
    )
    assert code == 1
    assert '"ok": false' in capsys.readouterr().out
