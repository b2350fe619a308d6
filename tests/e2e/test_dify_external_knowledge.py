"""End to end through our own services: a tenant applied (``tenant apply``'s Dify system,
wiring on) → Dify's registration probe against the real ``/retrieval`` → a query as Dify
sends it → cited records; then idempotency, a deleted knowledge base, drift and rotation.

Dify is the contract replay of tests/dify_console_fake.py; LLMFlow is the real app on the
embedded stack (PostgreSQL, Milvus Lite, local embedder), reached in-process.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from dify_console_fake import FakeDifyConsole

from llmflow.dify.client import DifyConsole, DifyError
from llmflow.dify.console_api import OPENAI_COMPATIBLE_PROVIDER, DifyConsoleApi
from llmflow.dify.wiring import DifySync, build_sync
from llmflow.errors import Unauthorized
from llmflow.tenancy.control_plane import ControlPlane
from llmflow.tenancy.dify import DifyReconciler
from llmflow.tenancy.dify_settings import DifySettings
from llmflow.tenancy.spec import TenantSpec

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT = "dept-wire"
LLMFLOW = "http://llmflow.test"
POLICY_MD = """# 출장 규정

## 제3조(숙박비)

국내 출장 숙박비는 1박 12만 원을 한도로 하며, 영수증을 반드시 제출한다.
"""
TOOLS_OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "LLMFlow tools", "version": "1"},
    "servers": [{"url": "http://llmflow-glue-api.llmflow-system.svc:8080"}],
    "paths": {
        "/v1/search": {
            "post": {
                "operationId": "search",
                "summary": "Hybrid search over knowledge bases",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "hits"}},
            }
        }
    },
}


@pytest.fixture(scope="module")
async def llmflow_app(runtime: Any) -> Any:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        yield app


async def _wait_jobs(client: httpx.AsyncClient, headers: dict[str, str], ids: list[str]) -> None:
    for _ in range(600):
        r = await client.get("/v1/jobs", params=[("ids", i) for i in ids], headers=headers)
        jobs = r.json()
        if all(j["status"] in ("succeeded", "failed", "skipped") for j in jobs):
            assert all(j["status"] == "succeeded" for j in jobs), jobs
            return
        await asyncio.sleep(0.2)
    raise AssertionError("ingest jobs did not finish")


def _sync(fake: FakeDifyConsole, runtime: Any, settings: DifySettings) -> DifySync:
    """The wiring ``llmflow dify sync`` runs for the tenant (same settings as the apply)."""
    sync = build_sync(
        settings,
        TENANT,
        TENANT,
        runtime.api_keys,
        runtime.knowledge_bases,
        transport=fake.transport(),
    )
    assert sync is not None
    return sync


def _pending(plan: list[Any]) -> list[tuple[str, str, str]]:
    return [(c.kind, c.name, c.operation.value) for c in plan if c.pending]


async def test_tenant_wired_and_queried_as_dify_does(
    runtime: Any, llmflow_app: Any, tmp_path: Path
) -> None:
    transport = httpx.ASGITransport(app=llmflow_app)
    admin_key = secrets.token_urlsafe(24)
    workspace = "7f1f6c1e-3c1a-4a52-9d36-0d2a1f0f0001"
    fake = FakeDifyConsole(admin_key, [workspace], probe_transport=transport)

    async with httpx.AsyncClient(transport=transport, base_url=LLMFLOW) as api:
        editor = await runtime.api_keys.create(TENANT, roles=["editor", "reader"], name="ops")
        h = {"Authorization": f"Bearer {editor.key}"}
        for kb in ("travel", "scratch"):
            r = await api.post("/v1/kb", json={"name": kb, "description": kb}, headers=h)
            assert r.status_code == 201, r.text
        files = [("files", ("travel.md", POLICY_MD.encode(), "text/markdown"))]
        r = await api.post("/v1/kb/travel/documents", files=files, headers=h)
        assert r.status_code == 202, r.text
        await _wait_jobs(api, h, [j["job_id"] for j in r.json()["jobs"]])

        # `tenant apply` with the Dify system: the release's values are rendered and the
        # tenant's workspace is wired.
        schema = tmp_path / "tools.json"
        schema.write_text(json.dumps(TOOLS_OPENAPI))
        settings = DifySettings(
            admin_api_key=admin_key,
            workspace_ids={TENANT: workspace},
            retrieval_endpoint=LLMFLOW,
            tools_openapi=str(schema),
        )
        plane = ControlPlane(
            [
                DifyReconciler(
                    settings, tmp_path / "values", runtime=runtime, transport=fake.transport()
                )
            ]
        )
        try:
            tenant_plan = await plane.plan([TenantSpec(TENANT, "Wired department")])
            applied = await plane.apply(tenant_plan)
        finally:
            await plane.aclose()
        assert (tmp_path / "values" / f"{TENANT}.values.yaml").is_file()
        plan = [c for c in tenant_plan.changes if c.kind != "helm-values"]
        done = [c for c in applied if c.kind != "helm-values"]
        sync = _sync(fake, runtime, settings)
        kinds = {(c.kind, c.operation.value) for c in plan}
        assert ("external-knowledge-api", "create") in kinds
        assert [c.name for c in plan if c.kind == "external-dataset"] == ["scratch", "travel"]
        assert {c.name for c in plan if c.kind == "model"} == {
            "llm/qwen2.5-7b-instruct",
            "text-embedding/bge-m3",
            "rerank/bge-reranker-v2-m3",
            "llm/llmflow-agent-research",
        }
        assert len(done) == len(_pending(plan)) and all(c.pending for c in done)
        # Secrets never reach the plan's JSON form.
        plan_json = json.dumps([c.to_dict() for c in plan])
        assert "llmf_" not in plan_json and admin_key not in plan_json

        # Dify's registration probe hit our real /retrieval (valid key, no body → 400 is
        # accepted by Dify; 403/404/502 would have refused it).
        assert fake.probes == [(f"{LLMFLOW}/retrieval", 400)]
        ws = fake.workspaces[workspace]
        (ext,) = ws.external_apis.values()
        assert ext["settings"]["endpoint"] == LLMFLOW
        key = ext["settings"]["api_key"]
        principal = await runtime.api_keys.authenticate(key)
        assert principal.tenant_id == TENANT and principal.roles == frozenset({"reader"})
        linked = {
            d["external_knowledge_info"]["external_knowledge_id"]: d for d in ws.datasets.values()
        }
        assert set(linked) == {"scratch", "travel"}
        # The tenant's own workspace: every member may build on the knowledge bases.
        assert {d["permission"] for d in linked.values()} == {"all_team_members"}

        # Model credentials: the provider form of model-providers.yaml + a model key.
        creds = ws.credentials[(OPENAI_COMPATIBLE_PROVIDER, "bge-m3", "text-embedding")]
        assert creds["credentials"]["endpoint_url"].endswith("/v1")
        gw = await runtime.api_keys.authenticate(creds["credentials"]["api_key"])
        assert gw.roles == frozenset({"model"}) and gw.tenant_id == TENANT
        agent = ws.credentials[(OPENAI_COMPATIBLE_PROVIDER, "llmflow-agent-research", "llm")]
        assert agent["credentials"]["endpoint_model_name"] == "llmflow-agent-research"
        tool = ws.tools["llmflow"]
        assert tool["credentials"]["auth_type"] == "api_key_header"
        assert [t["operation_id"] for t in tool["tools"]] == ["search"]

        # Templates imported; the RAG chatbot retrieves from the linked datasets.
        apps = {a["mode"]: a for a in ws.apps.values()}
        assert set(apps) == {"advanced-chat", "workflow", "agent-chat"}
        rag = apps["advanced-chat"]["dsl"]["workflow"]["graph"]["nodes"]
        (kr,) = [n for n in rag if n["data"]["type"] == "knowledge-retrieval"]
        assert sorted(kr["data"]["dataset_ids"]) == sorted(d["id"] for d in linked.values())
        assert (
            apps["agent-chat"]["dsl"]["model_config"]["model"]["name"] == "llmflow-agent-research"
        )

        # A query exactly as Dify's ExternalDatasetService sends it, with the registered key.
        body = {
            "retrieval_setting": {"top_k": 3, "score_threshold": 0.0},
            "query": "국내 출장 숙박비 한도는 얼마인가요?",
            "knowledge_id": linked["travel"]["external_knowledge_info"]["external_knowledge_id"],
        }
        r = await api.post(
            "/retrieval",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert r.status_code == 200, r.text
        records = r.json()["records"]
        assert records and "12만 원" in records[0]["content"]
        assert records[0]["title"] and records[0]["metadata"]["source"] == "travel.md"
        # ... and with a metadata_condition (Dify adds it only when set).
        body["metadata_condition"] = {
            "logical_operator": "and",
            "conditions": [
                {"name": ["document_name"], "comparison_operator": "is", "value": "travel.md"}
            ],
        }
        r = await api.post("/retrieval", json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["records"], r.text

        # Idempotent: a second sync plans nothing and calls nothing that writes.
        calls_before = len(fake.calls)
        plan2, done2 = await sync.sync()
        assert _pending(plan2) == [] and done2 == []
        # Observing costs 9 reads: registrations, datasets, models, 4 credentials, tool, apps.
        assert [m for m, _ in fake.calls[calls_before:]] == ["GET"] * 9

        # A deleted LLMFlow knowledge base loses its Dify link; the chatbot follows.
        r = await api.delete("/v1/kb/scratch", headers=h)
        assert r.status_code in (200, 202, 204), r.text
        plan3, _ = await sync.sync()
        assert ("external-dataset", "scratch", "delete") in _pending(plan3)
        assert ("app", "rag-chatbot", "update") in _pending(plan3)
        assert {
            d["external_knowledge_info"]["external_knowledge_id"] for d in ws.datasets.values()
        } == {"travel"}
        assert _pending((await sync.sync(dry_run=True))[0]) == []

        # Drift: a dataset narrowed to its creator in Dify is shared again.
        linked["travel"]["permission"] = "only_me"
        plan_p, _ = await sync.sync()
        assert _pending(plan_p) == [("external-dataset", "travel", "update")]
        assert linked["travel"]["permission"] == "all_team_members"

        # Drift: someone edits the registration's key in Dify → the slot is rotated.
        ext["settings"]["api_key"] = "llmf_000000000000_forged"
        plan4, _ = await sync.sync()
        assert ("external-knowledge-api", "llmflow", "update") in _pending(plan4)
        assert [c for c in _pending(plan4) if c[0] == "api-key" and c[2] == "delete"]
        new_key = ws.external_apis[ext["id"]]["settings"]["api_key"]
        assert (await runtime.api_keys.authenticate(new_key)).tenant_id == TENANT
        with pytest.raises(Unauthorized, match=r"revoked"):
            await runtime.api_keys.authenticate(key)
        assert _pending((await sync.sync(dry_run=True))[0]) == []


async def test_console_auth_is_dify_s() -> None:
    """Wrong admin key or a missing X-WORKSPACE-ID: 401 as Dify answers (nothing written)."""
    workspace = "7f1f6c1e-3c1a-4a52-9d36-0d2a1f0f0002"
    fake = FakeDifyConsole("the-admin-key", [workspace])
    wrong = DifyConsoleApi(
        DifyConsole.with_admin_key(
            "http://dify", "not-the-key", workspace, transport=fake.transport()
        )
    )
    with pytest.raises(DifyError) as info:
        await wrong.list_external_knowledge_apis()
    assert info.value.status == 401 and info.value.code == "unauthorized"
    no_ws = DifyConsole(
        "http://dify", {"Authorization": "Bearer the-admin-key"}, transport=fake.transport()
    )
    with pytest.raises(DifyError) as info:
        await no_ws.request("GET", "/apps")
    assert info.value.status == 401
    basic = DifyConsole(
        "http://dify",
        {"Authorization": "Basic abc", "X-WORKSPACE-ID": workspace},
        transport=fake.transport(),
    )
    with pytest.raises(DifyError, match="Invalid Authorization header format"):
        await basic.request("GET", "/apps")


async def test_registration_refused_when_probe_fails(runtime: Any, llmflow_app: Any) -> None:
    """Dify refuses a registration whose probe gets 403 (our route's answer to a bad key)."""
    workspace = "7f1f6c1e-3c1a-4a52-9d36-0d2a1f0f0003"
    fake = FakeDifyConsole("k", [workspace], probe_transport=httpx.ASGITransport(app=llmflow_app))
    api = DifyConsoleApi(
        DifyConsole.with_admin_key("http://dify", "k", workspace, transport=fake.transport())
    )
    with pytest.raises(DifyError) as info:
        await api.create_external_knowledge_api("bad", LLMFLOW, "llmf_abc_def")
    assert info.value.status == 400 and "Forbidden" in info.value.message
    assert fake.probes == [(f"{LLMFLOW}/retrieval", 403)]
    assert fake.workspaces[workspace].external_apis == {}
