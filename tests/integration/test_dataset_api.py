"""``POST /v1/datasets`` and ``GET /v1/datasets`` through the real app, policy (embedded OPA
with policies/opa) and storage. Authentication is covered by the auth tests; here the
verified principal is given directly (a Keycloak developer, or a real LLMFlow API key)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmflow.auth.principal import Principal
from llmflow.training.datasets import DatasetSettings

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datasets" / "ko_en_instructions.jsonl"
TENANT = "dept-datasets-api"


def developer(tenant: str) -> Principal:
    return Principal(
        tenant_id=tenant,
        subject="u-dev",
        roles=frozenset({"developer", "reader", "editor"}),
        groups=frozenset({f"/tenants/{tenant}"}),
        kind="user",
    )


@pytest.fixture(scope="module")
async def app(runtime: Any) -> AsyncIterator[Any]:
    from llmflow.api.app import create_app

    app = create_app(runtime.settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        yield app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_upload_list_and_tenant_isolation(app: Any) -> None:
    from llmflow.api.deps import get_principal

    app.dependency_overrides[get_principal] = lambda: developer(TENANT)
    try:
        async with client(app) as api:
            files = {"file": ("faq.jsonl", FIXTURE.read_bytes(), "application/jsonl")}
            r = await api.post("/v1/datasets", data={"name": "faq"}, files=files)
            assert r.status_code == 201, r.text
            body = r.json()
            assert body["version"] == "v1" and body["created"] is True
            assert body["report"]["duplicates_dropped"] == 2
            assert body["created_by"] == "u-dev" and body["source"]["file"] == "faq.jsonl"
            assert "880101-1234567" not in r.text

            bad = await api.post(
                "/v1/datasets",
                data={"name": "broken"},
                files={"file": ("x.jsonl", b'{"instruction": ', "application/jsonl")},
            )
            assert bad.status_code == 422
            assert bad.headers["content-type"].startswith("application/problem+json")
            assert (
                bad.json()["type"].endswith("/dataset_invalid") and "line 1" in bad.json()["detail"]
            )

            listed = await api.get("/v1/datasets")
            assert [v["version"] for v in listed.json()] == ["v1"]

        app.dependency_overrides[get_principal] = lambda: developer("dept-elsewhere")
        async with client(app) as api:
            assert (await api.get("/v1/datasets")).json() == []
    finally:
        app.dependency_overrides.clear()


async def test_over_the_cap_is_413_and_api_keys_may_not_train(app: Any, runtime: Any) -> None:
    from llmflow.api.deps import get_principal

    saved = runtime.settings.datasets
    app.dependency_overrides[get_principal] = lambda: developer(TENANT)
    runtime.settings.datasets = DatasetSettings(max_file_bytes=64)
    try:
        async with client(app) as api:
            files = {"file": ("faq.jsonl", FIXTURE.read_bytes(), "application/jsonl")}
            r = await api.post("/v1/datasets", data={"name": "big"}, files=files)
            assert r.status_code == 413 and r.json()["type"].endswith("/dataset_too_large")
    finally:
        runtime.settings.datasets = saved
        app.dependency_overrides.clear()

    issued = await runtime.api_keys.create(TENANT, roles=["editor", "reader"], name="ds")
    async with client(app) as api:
        r = await api.get("/v1/datasets", headers={"Authorization": f"Bearer {issued.key}"})
    assert r.status_code == 403 and "training.submit" in r.json()["detail"]
