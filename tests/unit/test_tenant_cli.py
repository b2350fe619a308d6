"""``llmflow tenant plan|apply|delete`` as a person or CI runs them (embedded settings: no
cluster, no Keycloak, no MLflow/Langfuse — manifests, OPA data and directories only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from llmflow.commands_tenant import tenant_app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "platform" / "tenants.example.yaml"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"LLMFLOW_DATA_DIR": str(tmp_path / "data")}


def _invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(tenant_app, list(args), env=env, input=stdin)


def _without(tmp_path: Path, tenant: str) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    document["tenants"] = [t for t in document["tenants"] if t["name"] != tenant]
    path = tmp_path / f"without-{tenant}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    return path


def test_the_command_is_registered_on_the_main_cli() -> None:
    from llmflow.commands import register

    app = typer.Typer()
    app.command()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["tenant", "--help"])
    assert result.exit_code == 0, result.output
    assert "apply" in result.output and "delete" in result.output


def test_dry_run_prints_the_plan_and_changes_nothing(env: dict[str, str]) -> None:
    result = _invoke(env, "apply", "-f", str(EXAMPLE), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dry_run"] is True and out["applied"] == []
    systems = {s["system"]: s for s in out["plan"]["systems"]}
    assert systems["mlflow"]["skipped"].startswith("mlflow not configured")
    assert out["plan"]["summary"]["create"] == 3 * 9 + 3 + 3  # objects, OPA data, directories
    assert not Path(env["LLMFLOW_DATA_DIR"]).exists()

    human = _invoke(env, "apply", "-f", str(EXAMPLE), "--dry-run")
    assert human.exit_code == 0, human.output
    assert "skipped: mlflow not configured" in human.output
    assert "dry run: nothing was changed" in human.output
    assert not Path(env["LLMFLOW_DATA_DIR"]).exists()


def test_apply_twice_then_plan_shows_only_unchanged(env: dict[str, str]) -> None:
    first = _invoke(env, "apply", "-f", str(EXAMPLE), "--json")
    assert first.exit_code == 0, first.output
    assert len(json.loads(first.stdout)["applied"]) == 33
    second = _invoke(env, "apply", "-f", str(EXAMPLE), "--json")
    assert json.loads(second.stdout)["applied"] == []
    plan = _invoke(env, "plan", "-f", str(EXAMPLE))
    assert plan.exit_code == 0
    assert "Plan: 0 to create, 0 to update, 0 to delete, 33 unchanged." in plan.output


def test_deletes_need_confirmation(env: dict[str, str], tmp_path: Path) -> None:
    assert _invoke(env, "apply", "-f", str(EXAMPLE)).exit_code == 0
    smaller = _without(tmp_path, "dept-hr")
    refused = _invoke(env, "apply", "-f", str(smaller), "--json")
    assert refused.exit_code == 1 and "--yes" in refused.output
    declined = _invoke(env, "apply", "-f", str(smaller), stdin="n\n")
    assert declined.exit_code == 1 and "nothing was changed" in declined.output
    manifests = Path(env["LLMFLOW_DATA_DIR"]) / "tenants" / "manifests"
    assert (manifests / "dept-hr.yaml").exists()
    done = _invoke(env, "apply", "-f", str(smaller), "--yes", "--json")
    assert done.exit_code == 0, done.output
    deleted = {(c["system"], c["name"]) for c in json.loads(done.stdout)["applied"]}
    assert ("kubernetes", "dept-hr") in deleted
    assert ("opa", "data.llmflow.tenants.dept-hr") in deleted
    assert not (manifests / "dept-hr.yaml").exists()


def test_delete_refuses_a_tenant_still_declared(env: dict[str, str]) -> None:
    result = _invoke(env, "delete", "dept-hr", "-f", str(EXAMPLE), "--yes")
    assert result.exit_code == 2
    assert "still declared" in result.output


def test_delete_asks_first_and_no_changes_nothing(env: dict[str, str], tmp_path: Path) -> None:
    assert _invoke(env, "apply", "-f", str(EXAMPLE)).exit_code == 0
    result = _invoke(
        env, "delete", "dept-hr", "-f", str(_without(tmp_path, "dept-hr")), stdin="n\n"
    )
    assert result.exit_code == 1, result.output
    assert "Purge every trace of tenant 'dept-hr'" in result.output
    assert "nothing was changed" in result.output
    data = Path(env["LLMFLOW_DATA_DIR"])
    assert (data / "tenants" / "manifests" / "dept-hr.yaml").exists()
    assert (
        "dept-hr"
        in json.loads((data / "tenants" / "opa-data.json").read_text())["llmflow"]["tenants"]
    )


def test_invalid_file_is_one_line_with_exit_2(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenants:\n  - name: dept-a\n    quotas: {cpu: lots}\n")
    result = _invoke(env, "plan", "-f", str(bad))
    assert result.exit_code == 2
    assert "not a Kubernetes quantity" in result.output
