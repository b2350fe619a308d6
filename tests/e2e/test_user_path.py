"""The user's path through the API on the embedded stack: upload → job done → Dify
``/retrieval`` returns the cited chunk → delete → gone from every store."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

POLICY_MD = """# 한빛테크 정보보안 규정

## 제5조(원격 접속)

임직원이 사외에서 사내망에 접속할 때에는 반드시 HanbitVPN과 MFA 인증을 사용하여야 한다.
원격 접속 기록은 180일간 보관한다.

## 제6조(비밀번호)

비밀번호는 12자 이상으로 하며 90일마다 변경한다.
"""

REMOTE_TXT = """Remote Work Policy

Employees may work remotely up to three days per week after manager approval.
Company laptops must be encrypted with full-disk encryption before leaving the office.
"""


async def wait_jobs(
    client: httpx.AsyncClient, headers: dict[str, str], ids: list[str]
) -> list[dict[str, Any]]:
    for _ in range(600):
        r = await client.get("/v1/jobs", params=[("ids", i) for i in ids], headers=headers)
        assert r.status_code == 200, r.text
        jobs: list[dict[str, Any]] = r.json()
        if all(j["status"] in ("succeeded", "failed", "skipped") for j in jobs):
            return jobs
        await asyncio.sleep(0.2)
    raise AssertionError(f"jobs did not finish: {jobs}")


@pytest.fixture(scope="module")
async def api(runtime: Any) -> Any:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):  # starts the in-process ingest worker
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
            yield client


async def test_upload_retrieve_delete(api: httpx.AsyncClient, runtime: Any) -> None:
    editor = await runtime.api_keys.create("acme", roles=["editor", "reader"], name="ops")
    h = {"Authorization": f"Bearer {editor.key}"}

    r = await api.post("/v1/kb", json={"name": "rules", "description": "사내 규정"}, headers=h)
    assert r.status_code == 201, r.text

    files = [
        ("files", ("security.md", POLICY_MD.encode(), "text/markdown")),
        ("files", ("remote.txt", REMOTE_TXT.encode(), "text/plain")),
        ("files", ("broken.pdf", b"%PDF-1.7\n1 0 obj <<>> garbage", "application/pdf")),
        ("files", ("empty.txt", b"", "text/plain")),
    ]
    r = await api.post("/v1/kb/rules/documents", files=files, headers=h)
    assert r.status_code == 202, r.text
    jobs = {
        j["source"]: j for j in await wait_jobs(api, h, [j["job_id"] for j in r.json()["jobs"]])
    }
    assert jobs["security.md"]["status"] == "succeeded"
    assert jobs["remote.txt"]["status"] == "succeeded"
    assert jobs["broken.pdf"]["status"] == "failed" and jobs["broken.pdf"]["error"]["reason"]
    assert (
        jobs["empty.txt"]["status"] == "failed" and jobs["empty.txt"]["error"]["reason"] == "empty"
    )
    doc_id = jobs["security.md"]["document_id"]

    # Dify's External Knowledge API with a reader key bound to this KB
    reader = await runtime.api_keys.create("acme", ["rules"])
    dh = {"Authorization": f"Bearer {reader.key}"}
    body = {
        "knowledge_id": "rules",
        "query": "사외에서 접속할 때 무엇을 써야 하나요?",
        "retrieval_setting": {"top_k": 3, "score_threshold": 0.0},
        "metadata_condition": None,
    }
    r = await api.post("/retrieval", json=body, headers=dh)
    assert r.status_code == 200, r.text
    records = r.json()["records"]
    assert records and "HanbitVPN" in records[0]["content"]
    assert (
        isinstance(records[0]["metadata"], dict)
        and records[0]["metadata"]["source"] == "security.md"
    )
    assert 0.0 <= records[0]["score"] <= 1.0 and records[0]["title"]

    # metadata_condition narrows to one document
    cond = {
        "logical_operator": "and",
        "conditions": [
            {"name": ["document_name"], "comparison_operator": "is", "value": "remote.txt"}
        ],
    }
    r = await api.post("/retrieval", json={**body, "metadata_condition": cond}, headers=dh)
    assert r.status_code == 200 and all(
        x["metadata"]["source"] == "remote.txt" for x in r.json()["records"]
    )

    # Dify's error contract
    r = await api.post("/retrieval", json=body, headers={"Authorization": "Token abc"})
    assert (r.status_code, r.json()["error_code"]) == (403, 1001)
    r = await api.post("/retrieval", json=body, headers={"Authorization": "Bearer llmf_nope_nope"})
    assert (r.status_code, r.json()["error_code"]) == (403, 1002)
    r = await api.post("/retrieval", json={**body, "knowledge_id": "missing"}, headers=h)
    assert (r.status_code, r.json()["error_code"]) == (404, 2001)
    probe = await api.post("/retrieval", headers=dh)  # Dify's registration probe: no body
    assert probe.status_code not in (403, 404, 502)

    # another tenant never sees acme's KB, even with the same name
    other = await runtime.api_keys.create("globex")
    r = await api.post("/retrieval", json=body, headers={"Authorization": f"Bearer {other.key}"})
    assert (r.status_code, r.json()["error_code"]) == (404, 2001)

    # idempotent re-upload, then a changed version replaces the old chunks
    r = await api.post("/v1/kb/rules/documents", files=[files[0]], headers=h)
    assert r.json()["jobs"][0]["status"] == "skipped"
    changed = POLICY_MD.replace("180일", "365일")
    r = await api.post(
        "/v1/kb/rules/documents",
        files=[("files", ("security.md", changed.encode(), "text/markdown"))],
        headers=h,
    )
    (job,) = await wait_jobs(api, h, [r.json()["jobs"][0]["job_id"]])
    assert job["status"] == "succeeded" and job["document_id"] == doc_id
    r = await api.post(
        "/v1/search",
        json={"query": "원격 접속 기록 보관 기간", "knowledge_bases": ["rules"], "top_k": 10},
        headers=h,
    )
    texts = " ".join(x["text"] for x in r.json()["results"])
    assert "365일" in texts and "180일" not in texts

    # delete: gone from the index, the object store and the metadata
    index = await runtime.index()
    assert await index.count("acme", document_id=doc_id) > 0
    r = await api.delete(f"/v1/kb/rules/documents/{doc_id}", headers=h)
    assert r.status_code == 204
    assert await index.count("acme", document_id=doc_id) == 0
    r = await api.get(f"/v1/kb/rules/documents/{doc_id}", headers=h)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    kb = await runtime.knowledge_bases.get("acme", "rules")
    assert not await runtime.object_store.exists("acme", f"kb/{kb.id}/{doc_id}/v1/security.md")
    r = await api.post("/retrieval", json=body, headers=dh)
    assert all(x["metadata"]["source"] != "security.md" for x in r.json()["records"])


async def test_bad_requests_get_problem_details(api: httpx.AsyncClient, runtime: Any) -> None:
    editor = await runtime.api_keys.create("acme2", roles=["editor"])
    h = {"Authorization": f"Bearer {editor.key}"}
    r = await api.post("/v1/kb", json={"name": "Bad Name!"}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = await api.get("/v1/kb")
    assert r.status_code == 401 and r.json()["status"] == 401
    r = await api.post("/v1/search", json={"query": "x", "knowledge_bases": ["nope"]}, headers=h)
    assert r.status_code == 404
    reader = await runtime.api_keys.create("acme2")
    r = await api.post(
        "/v1/kb", json={"name": "x"}, headers={"Authorization": f"Bearer {reader.key}"}
    )
    assert r.status_code == 403
    await runtime.api_keys.revoke(editor.id)
    assert (await api.get("/v1/kb", headers=h)).status_code == 401


async def test_health_metrics_openapi(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": "ok", "milvus": "ok"}
    assert "llmflow_http_requests_total" in (await api.get("/metrics")).text
    spec = (await api.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    for path in ("/retrieval", "/v1/search", "/v1/kb/{kb}/documents", "/v1/jobs/{job_id}"):
        assert path in spec["paths"]
