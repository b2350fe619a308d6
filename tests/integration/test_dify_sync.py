"""``tenant apply``'s Dify system with the wiring on, against the Dify contract replay and
the real data plane: instance-per-tenant (values rendered + workspace wired) and shared mode
(two tenants in one workspace, each with its own key — and neither can read the other)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from dify_console_fake import FakeDifyConsole

from llmflow.tenancy.control_plane import ControlPlane
from llmflow.tenancy.dify import DifyReconciler
from llmflow.tenancy.dify_settings import DifySettings
from llmflow.tenancy.reconciler import Operation
from llmflow.tenancy.spec import TenantSpec

pytestmark = pytest.mark.integration

LLMFLOW = "http://llmflow.test"
OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "LLMFlow tools", "version": "1"},
    "servers": [{"url": "http://llmflow-glue-api.llmflow-system.svc:8080"}],
    "paths": {
        "/v1/search": {
            "post": {"operationId": "search", "responses": {"200": {"description": "ok"}}}
        },
        "/v1/graph/query": {
            "post": {"operationId": "graph_query", "responses": {"200": {"description": "ok"}}}
        },
    },
}


@pytest.fixture(scope="module")
async def llmflow_transport(runtime: Any) -> Any:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


async def _kb(runtime: Any, tenant: str, name: str) -> None:
    await runtime.knowledge_bases.create(tenant, name, description=name, exist_ok=True)


def _settings(tmp_path: Path, **fields: Any) -> DifySettings:
    schema = tmp_path / "tools.json"
    schema.write_text(json.dumps(OPENAPI))
    return DifySettings(
        retrieval_endpoint=LLMFLOW,
        tools_openapi=str(schema),
        values_dir=tmp_path / "values",
        **fields,
    )


async def _apply(plane: ControlPlane, tenants: list[TenantSpec]) -> Any:
    plan = await plane.plan(tenants)
    done = await plane.apply(plan)
    return plan, done


async def test_tenant_apply_installs_and_wires_instance_per_tenant(
    runtime: Any, llmflow_transport: Any, tmp_path: Path
) -> None:
    admin = secrets.token_urlsafe(16)
    ws_a, ws_b = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    fake = FakeDifyConsole(admin, [ws_a, ws_b], probe_transport=llmflow_transport)
    await _kb(runtime, "ipt-a", "handbook")
    settings = _settings(
        tmp_path, admin_api_key=admin, workspace_ids={"ipt-a": ws_a, "ipt-b": ws_b}
    )
    tenants = [TenantSpec("ipt-a", "A"), TenantSpec("ipt-b", "B"), TenantSpec("ipt-c", "C")]
    reconciler = DifyReconciler(
        settings, tmp_path / "values", runtime=runtime, transport=fake.transport()
    )
    plane = ControlPlane([reconciler])
    try:
        plan, _done = await _apply(plane, tenants)
        (system,) = plan.systems
        kinds = {(c.tenant, c.kind) for c in system.changes if c.pending}
        assert {
            ("ipt-a", "helm-values"),
            ("ipt-b", "helm-values"),
            ("ipt-c", "helm-values"),
        } <= kinds
        assert ("ipt-a", "external-dataset") in kinds and ("ipt-b", "external-dataset") not in kinds
        (skip,) = [c for c in system.changes if c.kind == "wiring"]
        assert skip.tenant == "ipt-c" and "no Dify workspace id" in skip.detail
        assert sorted(p.name for p in (tmp_path / "values").iterdir()) == [
            "ipt-a.values.yaml",
            "ipt-b.values.yaml",
            "ipt-c.values.yaml",
        ]
        a, b = fake.workspaces[ws_a], fake.workspaces[ws_b]
        assert [d["name"] for d in a.datasets.values()] == ["handbook"]
        assert b.datasets == {} and len(b.external_apis) == 1 and len(b.apps) == 3
        assert {t["operation_id"] for t in a.tools["llmflow"]["tools"]} == {
            "search",
            "graph_query",
        }
        # Each workspace's registration carries its own tenant's key.
        for tenant, ws in (("ipt-a", a), ("ipt-b", b)):
            (ext,) = ws.external_apis.values()
            principal = await runtime.api_keys.authenticate(ext["settings"]["api_key"])
            assert principal.tenant_id == tenant

        again = await plane.plan(tenants)
        assert again.pending == [], [c.to_dict() for c in again.pending]
    finally:
        await plane.aclose()


async def test_shared_mode_keeps_tenants_apart(
    runtime: Any, llmflow_transport: Any, tmp_path: Path
) -> None:
    admin = secrets.token_urlsafe(16)
    ws = "00000000-0000-4000-8000-0000000000ff"
    fake = FakeDifyConsole(admin, [ws], probe_transport=llmflow_transport)
    await _kb(runtime, "shr-x", "policies")
    await _kb(runtime, "shr-y", "policies")
    await _kb(runtime, "shr-y", "salaries")
    settings = _settings(tmp_path, mode="shared", admin_api_key=admin, shared_workspace_id=ws)
    tenants = [TenantSpec("shr-x", "X"), TenantSpec("shr-y", "Y")]
    plane = ControlPlane(
        [DifyReconciler(settings, tmp_path / "values", runtime=runtime, transport=fake.transport())]
    )
    try:
        await _apply(plane, tenants)
        assert not (tmp_path / "values").exists()  # nothing installed per tenant
        space = fake.workspaces[ws]
        apis = {a["name"]: a for a in space.external_apis.values()}
        assert set(apis) == {"llmflow-shr-x", "llmflow-shr-y"}
        names = sorted(d["name"] for d in space.datasets.values())
        assert names == ["shr-x:policies", "shr-y:policies", "shr-y:salaries"]
        # Shared workspace: datasets stay with the owner (Dify sends no end-user identity).
        assert {d["permission"] for d in space.datasets.values()} == {"only_me"}
        assert {a["name"] for a in space.apps.values()} >= {
            "LLMFlow 사내 지식 챗봇 (Cited RAG) (shr-x)",
            "LLMFlow 사내 지식 챗봇 (Cited RAG) (shr-y)",
        }
        # The X chatbot only sees X's dataset.
        (rag_x,) = [
            a
            for a in space.apps.values()
            if a["name"].endswith("(shr-x)") and a["mode"] == "advanced-chat"
        ]
        (kr,) = [
            n
            for n in rag_x["dsl"]["workflow"]["graph"]["nodes"]
            if n["data"]["type"] == "knowledge-retrieval"
        ]
        x_ids = {d["id"] for d in space.datasets.values() if d["name"].startswith("shr-x:")}
        assert set(kr["data"]["dataset_ids"]) == x_ids

        # Tenancy lives in the data plane: X's registered key cannot read Y's knowledge base,
        # even though both sit in the same Dify workspace.
        x_key = apis["llmflow-shr-x"]["settings"]["api_key"]
        body = {
            "knowledge_id": "salaries",
            "query": "연봉",
            "retrieval_setting": {"top_k": 3, "score_threshold": 0.0},
        }
        async with httpx.AsyncClient(transport=llmflow_transport, base_url=LLMFLOW) as client:
            r = await client.post(
                "/retrieval", json=body, headers={"Authorization": f"Bearer {x_key}"}
            )
        assert r.status_code == 404 and r.json()["error_code"] == 2001

        again = await plane.plan(tenants)
        assert again.pending == []
        assert {c.operation for c in again.changes} == {Operation.UNCHANGED}
    finally:
        await plane.aclose()


async def test_a_refused_registration_never_shows_the_key(runtime: Any, tmp_path: Path) -> None:
    """Dify's probe error names the key it tried; the error the operator sees does not, and
    the next sync starts over with a fresh key (the orphan is revoked)."""
    from llmflow.dify.client import DifyError
    from llmflow.dify.wiring import build_sync

    admin = secrets.token_urlsafe(16)
    ws = "00000000-0000-4000-8000-0000000000ee"
    # The endpoint answers 403 (e.g. an APISIX route that rejects the key).
    refusing = httpx.MockTransport(lambda request: httpx.Response(403, json={"error_code": 1002}))
    fake = FakeDifyConsole(admin, [ws], probe_transport=refusing)
    settings = _settings(tmp_path, admin_api_key=admin, workspace_ids={"refused-t": ws})
    sync = build_sync(
        settings,
        "refused-t",
        "refused-t",
        runtime.api_keys,
        runtime.knowledge_bases,
        transport=fake.transport(),
    )
    assert sync is not None
    with pytest.raises(DifyError) as info:
        await sync.sync()
    assert info.value.status == 400 and "Authorization failed with api_key: ***" in str(info.value)
    assert "llmf_" not in str(info.value) and info.value.__cause__ is None
    (orphan,) = [
        k
        for k in await runtime.api_keys.list("refused-t")
        if k["name"] == "dify:external-knowledge"
    ]
    # The next plan rotates again and revokes the key the refused registration left behind.
    plan = sync.plan(await sync.observe())
    revoke = [c for c in plan if c.kind == "api-key" and c.operation is Operation.DELETE]
    assert [c.payload["revoke"] for c in revoke if "external-knowledge" in c.name] == [orphan["id"]]


def test_dify_plan_cli_reads_only_and_prints_no_secret(tmp_path: Path) -> None:
    """``llmflow dify plan --json`` against the replay on a real port: GETs only, the plan of
    a fresh workspace, and neither the admin key nor any LLMFlow key in the output."""
    from typer.testing import CliRunner

    from llmflow.commands_dify import dify_app

    admin = secrets.token_urlsafe(16)
    ws = "00000000-0000-4000-8000-0000000000c1"
    fake = FakeDifyConsole(admin, [ws])
    url = fake.start()
    try:
        key_file = tmp_path / "dify-admin-key"
        key_file.write_text(admin)
        schema = tmp_path / "tools.json"
        schema.write_text(json.dumps(OPENAPI))
        env = {
            "LLMFLOW_DATA_DIR": str(tmp_path / "data"),
            "LLMFLOW_DIFY__ADMIN_API_KEY_FILE": str(key_file),
            "LLMFLOW_DIFY__WORKSPACE_IDS": json.dumps({"cli-t": ws}),
            "LLMFLOW_DIFY__BASE_URLS": json.dumps({"cli-t": url}),
        }
        result = CliRunner().invoke(
            dify_app, ["plan", "--json", "--tools-openapi", str(schema)], env=env
        )
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["dry_run"] is True and out["mode"] == "instance-per-tenant"
        tenant = out["tenants"]["cli-t"]
        assert tenant["target"] == url and tenant["applied"] == []
        ops = {(c["kind"], c["operation"]) for c in tenant["plan"]}
        assert {
            ("api-key", "create"),
            ("external-knowledge-api", "create"),
            ("model", "create"),
            ("api-tool", "create"),
            ("app", "create"),
        } <= ops
        assert admin not in result.output and "llmf_" not in result.output
        assert fake.calls and {m for m, _ in fake.calls} == {"GET"}

        # A wrong admin key: Dify's 401 becomes one red line and exit code 1.
        key_file.write_text("not-the-key")
        result = CliRunner().invoke(dify_app, ["plan", "--tools-openapi", str(schema)], env=env)
        assert result.exit_code == 1 and "401" in result.output
        assert "not-the-key" not in result.output
    finally:
        fake.stop()


async def test_templates_newer_than_the_running_dify_are_confirmed(
    runtime: Any, llmflow_transport: Any, tmp_path: Path
) -> None:
    """A Dify whose DSL is older than our templates answers 202 ``pending``; the wiring
    confirms the import, and the apps exist afterwards (no retry loop, no failure)."""
    from llmflow.dify.wiring import build_sync

    admin = secrets.token_urlsafe(16)
    ws = "00000000-0000-4000-8000-0000000000dd"
    fake = FakeDifyConsole(admin, [ws], probe_transport=llmflow_transport)
    fake.dsl_version = "0.5.0"
    settings = _settings(tmp_path, admin_api_key=admin, workspace_ids={"older-t": ws})
    sync = build_sync(
        settings,
        "older-t",
        "older-t",
        runtime.api_keys,
        runtime.knowledge_bases,
        transport=fake.transport(),
    )
    assert sync is not None
    await sync.sync()
    imports = [p for m, p in fake.calls if m == "POST" and p.startswith("/console/api/apps/")]
    assert len([p for p in imports if p.endswith("/confirm")]) == 3
    assert {a["mode"] for a in fake.workspaces[ws].apps.values()} == {
        "advanced-chat",
        "workflow",
        "agent-chat",
    }
    assert not fake.workspaces[ws].pending_imports
    assert [c for c in (await sync.sync(dry_run=True))[0] if c.pending] == []
