"""Licence-aware Dify tenancy and the wiring's building blocks (no Dify, no data plane)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from llmflow.dify.wiring import WiringTarget, load_models
from llmflow.settings import Settings
from llmflow.tenancy.control_plane import ControlPlane
from llmflow.tenancy.dify import (
    REDIS_DB_BASE,
    DifyReconciler,
    bucket_name,
    database_name,
    read_overlays,
)
from llmflow.tenancy.dify_settings import DifyLicenceError, DifySettings
from llmflow.tenancy.reconciler import Operation
from llmflow.tenancy.spec import load_tenants

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "platform" / "tenants.example.yaml"
CHART = REPO.parent / "shared" / "charts-reference" / "dify"
PLATFORM = yaml.safe_load((REPO / "platform" / "platform.yaml").read_text(encoding="utf-8"))


def _merge(base: Any, overlay: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        out = dict(base)
        for key, value in overlay.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return overlay


def test_licensed_multi_workspace_is_refused_without_the_licence() -> None:
    settings = DifySettings(mode="licensed-multi-workspace")
    with pytest.raises(DifyLicenceError, match="COMMERCIAL_LICENCE") as info:
        settings.check_licence()
    assert info.value.status == 500 and info.value.code == "dify_licence_required"
    DifySettings(mode="licensed-multi-workspace", commercial_licence=True).check_licence()
    DifySettings(mode="shared").check_licence()
    DifySettings().check_licence()


def test_default_settings_keep_the_control_plane_as_it_was(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.dify.mode == PLATFORM["tenancy"]["difyMode"] == "instance-per-tenant"
    assert not settings.dify.managed
    assert "dify" not in ControlPlane.from_settings(settings).reconcilers
    managed = Settings(data_dir=tmp_path, dify={"manage": True}, _env_file=None)  # type: ignore[call-arg]
    assert "dify" in ControlPlane.from_settings(managed).reconcilers


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("s3cr3t-admin\n")
    monkeypatch.setenv("LLMFLOW_DIFY__MODE", "shared")
    monkeypatch.setenv("LLMFLOW_DIFY__ADMIN_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("LLMFLOW_DIFY__SHARED_WORKSPACE_ID", "ws-1")
    monkeypatch.setenv("LLMFLOW_DIFY__WORKSPACE_IDS", '{"dept-hr": "ws-hr"}')
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.dify.admin_key() == "s3cr3t-admin"
    assert settings.dify.managed
    assert settings.dify.workspace_id("dept-hr") == "ws-hr"
    assert settings.dify.workspace_id("dept-finance") == "ws-1"
    assert settings.dify.base_url("dept-hr", "dept-hr") == settings.dify.shared_base_url
    ipt = DifySettings(base_urls={"dept-hr": "http://dify.hr:5001"})
    assert ipt.base_url("dept-hr", "t-dept-hr") == "http://dify.hr:5001"
    assert ipt.base_url("dept-it", "t-dept-it") == "http://dify-api.t-dept-it.svc:5001"
    assert ipt.workspace_id("dept-it") is None


async def test_tenant_plan_refuses_licensed_mode(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path, dify={"mode": "licensed-multi-workspace"}, _env_file=None
    )
    plane = ControlPlane.from_settings(settings)
    try:
        with pytest.raises(DifyLicenceError):
            await plane.plan(load_tenants(EXAMPLE))
    finally:
        await plane.aclose()


def test_tenant_apply_cli_says_why(tmp_path: Path) -> None:
    from llmflow.commands_tenant import tenant_app

    env = {
        "LLMFLOW_DATA_DIR": str(tmp_path / "data"),
        "LLMFLOW_DIFY__MODE": "licensed-multi-workspace",
    }
    result = CliRunner().invoke(tenant_app, ["apply", "-f", str(EXAMPLE), "--dry-run"], env=env)
    assert result.exit_code == 1
    assert "licence" in result.output and "COMMERCIAL_LICENCE" in result.output.replace("\n", "")


async def test_instance_per_tenant_renders_valid_chart_values(tmp_path: Path) -> None:
    tenants = load_tenants(EXAMPLE)
    values_dir = tmp_path / "dify"
    reconciler = DifyReconciler(DifySettings(), values_dir, namespace_prefix="t-")
    plan = reconciler.plan(tenants, await reconciler.observe(tenants))
    assert {(c.kind, c.name, c.operation) for c in plan} == {
        ("helm-values", f"t-{t.name}/dify", Operation.CREATE) for t in tenants
    }
    assert await reconciler.apply(plan) == plan
    overlays = read_overlays(values_dir)
    assert set(overlays) == {t.name for t in tenants}
    dbs = sorted(o["externalRedis"]["db"]["app"] for o in overlays.values())
    assert dbs == [REDIS_DB_BASE, REDIS_DB_BASE + 2, REDIS_DB_BASE + 4]
    hr = overlays["dept-hr"]
    assert hr["externalPostgres"]["database"] == {
        "api": "dify_dept_hr",
        "pluginDaemon": "dify_plugin_dept_hr",
    }
    assert hr["externalS3"]["bucketName"]["api"] == "llmflow-dept-hr"
    text = (values_dir / "dept-hr.values.yaml").read_text()
    assert "helm upgrade --install dify dify-0.37.0.tgz --namespace t-dept-hr" in text

    base = yaml.safe_load((REPO / "helm-values" / "dify" / "values.yaml").read_text())
    if (CHART / "values.schema.json").is_file():
        schema = json.loads((CHART / "values.schema.json").read_text())
        chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())
        for overlay in overlays.values():
            jsonschema.validate(_merge(_merge(chart_defaults, base), overlay), schema)
        # ... and the schema is strict enough to notice a wrong key type.
        bad = _merge(base, {"externalRedis": {"db": {"app": "two"}}})
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(_merge(chart_defaults, bad), schema)

    # The files are the state: nothing to do the second time.
    again = reconciler.plan(tenants, await reconciler.observe(tenants))
    assert {c.operation for c in again} == {Operation.UNCHANGED}

    # A new tenant takes the lowest free pair; the others keep theirs.
    document = yaml.safe_load(EXAMPLE.read_text())
    document["tenants"].append({"name": "aaa-lab", "displayName": "AAA lab"})
    document["tenants"] = [t for t in document["tenants"] if t["name"] != "dept-finance"]
    changed = tmp_path / "tenants.yaml"
    changed.write_text(yaml.safe_dump(document, allow_unicode=True))
    tenants2 = load_tenants(changed)
    plan2 = reconciler.plan(tenants2, await reconciler.observe(tenants2))
    pending = {(c.name, c.operation) for c in plan2 if c.pending}
    assert pending == {
        ("t-aaa-lab/dify", Operation.CREATE),
        ("t-dept-finance/dify", Operation.DELETE),
    }
    await reconciler.apply(plan2)
    overlays2 = read_overlays(values_dir)
    assert overlays2["dept-hr"] == overlays["dept-hr"]
    assert (
        overlays2["aaa-lab"]["externalRedis"]["db"]["app"]
        == (overlays["dept-finance"]["externalRedis"]["db"]["app"])
    )
    assert "dept-finance" not in overlays2


async def test_shared_mode_installs_nothing_per_tenant(tmp_path: Path) -> None:
    tenants = load_tenants(EXAMPLE)
    reconciler = DifyReconciler(DifySettings(mode="shared"), tmp_path / "dify")
    plan = reconciler.plan(tenants, await reconciler.observe(tenants))
    assert {c.kind for c in plan} == {"tenancy"} and not any(c.pending for c in plan)
    assert not (tmp_path / "dify").exists()


def test_names_and_buckets() -> None:
    assert bucket_name("llmflow-", "Dept_HR") == "llmflow-dept-hr"
    assert len(bucket_name("llmflow-", "x" * 70)) == 63
    assert database_name("dify_plugin", "project-ai") == "dify_plugin_project_ai"
    shared = WiringTarget("dept-hr", api=None, shared=True)  # type: ignore[arg-type]
    assert shared.external_api_name == "llmflow-dept-hr"
    assert shared.dataset_name("rules") == "dept-hr:rules"
    assert shared.template_name("rag-chatbot") == "rag-chatbot@dept-hr"
    own = WiringTarget("dept-hr", api=None)  # type: ignore[arg-type]
    assert (own.external_api_name, own.dataset_name("rules")) == ("llmflow", "rules")


def test_models_follow_model_providers_yaml() -> None:
    providers = REPO / "platform" / "dify" / "model-providers.yaml"
    document = yaml.safe_load(providers.read_text())
    models = load_models(providers, "http://gw.example:8080/v1", ["llmflow-agent-research"])
    assert [(m.model, m.model_type) for m in models] == [
        *((m["model"], m["model_type"]) for m in document["models"]),
        ("llmflow-agent-research", "llm"),
    ]
    for spec in models:
        assert "api_key" not in spec.credentials
        assert spec.credentials["endpoint_url"] == "http://gw.example:8080/v1"
    agent = models[-1].credentials
    assert agent["endpoint_model_name"] == "llmflow-agent-research"
    assert agent["mode"] == "chat" and agent["context_size"] == "32768"


def test_dify_command_group() -> None:
    import typer

    from llmflow.commands_dify import register

    app = typer.Typer()
    app.command()(lambda: None)
    register(app)
    result = CliRunner().invoke(app, ["dify", "--help"])
    assert result.exit_code == 0, result.output
    for command in ("sync", "plan", "offboard", "plugins"):
        assert command in result.output


def test_dify_plan_refuses_licensed_mode(tmp_path: Path) -> None:
    from llmflow.commands_dify import dify_app

    env = {
        "LLMFLOW_DATA_DIR": str(tmp_path / "data"),
        "LLMFLOW_DIFY__MODE": "licensed-multi-workspace",
    }
    result = CliRunner().invoke(dify_app, ["plan", "--tenant", "dept-hr"], env=env)
    assert result.exit_code == 2, result.output
    assert "licence" in result.output
    result = CliRunner().invoke(dify_app, ["plan"], env={"LLMFLOW_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "no tenant" in result.output
