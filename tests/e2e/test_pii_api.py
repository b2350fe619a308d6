"""PII through the API: the ingest stage (report, masking, block) and /v1/pii/*."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_user_path import wait_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

MINWON = """[민원 답변서]

민원인 성명: 강민서 (주민등록번호 880101-1234568, 연락처 010-3815-2640)
주소: 서울특별시 강서구 화곡로 287, 102동 1204호

귀하의 주택 보수 민원에 대해 관련 부서 검토 결과 행정조치를 진행할 예정입니다.
추가 문의는 담당자 이재훈 주무관 (02-2148-3847) 까지 연락 바랍니다.
"""


@pytest.fixture(scope="module")
async def api(runtime: Any) -> Any:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://llmflow.test") as client:
            yield client


async def _key(runtime: Any, tenant: str) -> dict[str, str]:
    issued = await runtime.api_keys.create(tenant, roles=["editor", "reader"], name="pii-test")
    return {"Authorization": f"Bearer {issued.key}"}


async def _upload(
    api: httpx.AsyncClient, h: dict[str, str], kb: str, classification: str
) -> dict[str, Any]:
    r = await api.post("/v1/kb", json={"name": kb, "classification": classification}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["classification"] == classification
    files = [("files", ("minwon.txt", MINWON.encode(), "text/plain"))]
    r = await api.post(f"/v1/kb/{kb}/documents", files=files, headers=h)
    assert r.status_code == 202, r.text
    (job,) = await wait_jobs(api, h, [j["job_id"] for j in r.json()["jobs"]])
    return job


async def test_ingest_masks_identifiers_and_keeps_names_searchable(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    h = await _key(runtime, "pii-internal")
    job = await _upload(api, h, "minwon", "internal")
    assert job["status"] == "succeeded", job
    (doc,) = (await api.get("/v1/kb/minwon/documents", headers=h)).json()
    pii = doc["pii"]
    assert pii["counts"]["KR_RRN"] == 1 and pii["counts"]["PERSON"] == 2
    assert pii["counts"]["PHONE_NUMBER"] == 2 and pii["counts"]["ADDRESS"] == 1
    assert pii["actions"]["KR_RRN"] == "mask" and pii["actions"]["PERSON"] == "allow"
    assert "880101" not in str(pii) and "강민서" not in str(pii)  # counts, never values

    r = await api.post(
        "/v1/search",
        json={"query": "강민서 주민등록번호", "knowledge_bases": ["minwon"], "mode": "lexical"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    text = " ".join(hit["text"] for hit in r.json()["results"])
    assert "강민서" in text and "880101-1******" in text
    assert "1234568" not in text  # the indexed text never held the RRN


async def test_secret_kb_and_hr_tenant_refuse_documents_with_pii(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    # a tenant whose policy data allows secret knowledge bases (policies/opa/data.json); an
    # undeclared tenant gets the default ceiling, confidential, and may not create one
    h = await _key(runtime, "dept-finance")
    job = await _upload(api, h, "vault", "secret")
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "pii_blocked"
    assert "secret" in job["error"]["message"] and "KR_RRN" in job["error"]["message"]
    assert "880101" not in job["error"]["message"]
    hits = await api.post(
        "/v1/search", json={"query": "강민서", "knowledge_bases": ["vault"]}, headers=h
    )
    assert hits.status_code == 200 and hits.json()["results"] == []  # nothing indexed

    hr = await _key(runtime, "dept-hr")
    job = await _upload(api, hr, "complaints", "internal")
    assert job["status"] == "failed" and job["error"]["reason"] == "pii_blocked"
    assert "dept-hr" in job["error"]["message"]


async def test_analyze_and_anonymize_endpoints(api: httpx.AsyncClient, runtime: Any) -> None:
    h = await _key(runtime, "pii-api")
    text = "담당자 이서연 주무관 (02-2110-6543, lsy.environ@me.go.kr)"
    r = await api.post("/v1/pii/analyze", json={"text": text}, headers=h)
    assert r.status_code == 200, r.text
    found = [(e["type"], e["text"], e["recognizer"] != "") for e in r.json()["entities"]]
    assert found == [
        ("PERSON", "이서연", True),
        ("PHONE_NUMBER", "02-2110-6543", True),
        ("EMAIL_ADDRESS", "lsy.environ@me.go.kr", True),
    ]
    r = await api.post(
        "/v1/pii/analyze", json={"text": text, "entities": ["EMAIL_ADDRESS"]}, headers=h
    )
    assert [e["type"] for e in r.json()["entities"]] == ["EMAIL_ADDRESS"]
    r = await api.post("/v1/pii/analyze", json={"text": text, "entities": ["SHOE_SIZE"]}, headers=h)
    assert r.status_code == 422 and "SHOE_SIZE" in r.json()["detail"]

    r = await api.post("/v1/pii/anonymize", json={"text": text}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "담당자 이** 주무관 (02-****-6543, l**********@me.go.kr)"
    assert body["counts"] == {"EMAIL_ADDRESS": 1, "PERSON": 1, "PHONE_NUMBER": 1}
    assert {i["action"] for i in body["items"]} == {"mask"}

    types = {e["type"] for e in (await api.get("/v1/pii/entities", headers=h)).json()}
    assert {"PERSON", "KR_RRN", "KR_VEHICLE_PLATE", "ADDRESS"} <= types


async def test_tenant_policy_blocks_with_problem_details(
    api: httpx.AsyncClient, runtime: Any
) -> None:
    h = await _key(runtime, "project-ai")
    r = await api.post(
        "/v1/pii/anonymize", json={"text": "주민번호 880101-1234568 확인 요청"}, headers=h
    )
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/pii_blocked")
    assert problem["errors"] == [{"entity_type": "KR_RRN"}]
    assert "880101" not in r.text


async def test_pii_endpoints_need_a_credential_and_sane_input(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/pii/analyze", json={"text": "이서연 주무관"})
    assert r.status_code == 401
    r = await api.post(
        "/v1/pii/analyze", json={"text": 123}, headers={"Authorization": "Bearer llmf_x_y"}
    )
    assert r.status_code == 401  # the credential is checked first
