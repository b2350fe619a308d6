"""``tenant delete`` on real engines: one tenant's knowledge bases, documents, chunks (Milvus
Lite), ingest jobs, API keys and objects go; another tenant's stay. Buckets per tenant on a
real S3 endpoint (moto's server over HTTP on loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from llmflow.cli import operator
from llmflow.errors import NotFound
from llmflow.ingest.pipeline import Upload
from llmflow.settings import ObjectStoreSettings
from llmflow.tenancy import TenantSpec
from llmflow.tenancy.buckets import ObjectStoreReconciler
from llmflow.tenancy.control_plane import ControlPlane
from llmflow.tenancy.purge import purge_tenant_data
from llmflow.tenancy.reconciler import Operation

pytestmark = pytest.mark.integration

DOC = "# 출장 규정\n\n## 제2조(숙박비)\n\n국내 출장 숙박비는 1박 10만원을 한도로 실비 지급한다.\n"
GONE, KEPT = "purge-gone", "purge-kept"


async def _ingest(rt: Any, tenant: str, kb: str, name: str) -> str:
    await rt.knowledge_bases.create(tenant, kb, exist_ok=True)
    jobs = await rt.ingest.submit(tenant, kb, [Upload(name, DOC.encode())])
    await rt.jobs.drain()
    (job,) = await rt.ingest.jobs(tenant, [jobs[0]["job_id"]])
    assert job["status"] == "succeeded", job
    return str(job["document_id"])


async def test_delete_purges_one_tenant_and_leaves_the_other(runtime: Any) -> None:
    rt = runtime
    for tenant in (GONE, KEPT):
        await _ingest(rt, tenant, "rules", "travel.md")
        await _ingest(rt, tenant, "handbook", "travel-2.md")
        await rt.api_keys.create(tenant, ["rules"], name="dify")
    index = await rt.index()
    kept_chunks = await index.count(KEPT)
    assert await index.count(GONE) > 0 and kept_chunks > 0
    kept_docs = await rt.ingest.documents(KEPT, "rules")
    kept_ids = {d["id"] for d in kept_docs}

    declared = [TenantSpec(name=KEPT, display_name="Kept")]
    plane = ControlPlane.from_settings(rt.settings)
    try:
        await plane.apply(await plane.plan([*declared, TenantSpec(name=GONE, display_name="G")]))
        plan = await plane.plan_delete(GONE, declared)
        report = await purge_tenant_data(rt, GONE)
        await plane.apply(plan)
    finally:
        await plane.aclose()

    assert sorted(report.knowledge_bases) == ["handbook", "rules"]
    assert report.documents == 2 and report.chunks > 0 and report.api_keys == 1
    # the purged tenant: nothing left in any store
    assert await rt.knowledge_bases.list(GONE) == []
    assert await index.count(GONE) == 0
    assert await rt.api_keys.list(GONE) == []
    assert not (rt.settings.object_root / GONE).exists()
    tenants_dir = rt.settings.data_dir / "tenants"
    assert not (tenants_dir / "manifests" / f"{GONE}.yaml").exists()
    opa = json.loads((tenants_dir / "opa-data.json").read_text())["llmflow"]["tenants"]
    assert GONE not in opa and KEPT in opa
    # the other tenant: untouched
    assert {kb.name for kb in await rt.knowledge_bases.list(KEPT)} == {"handbook", "rules"}
    assert await rt.ingest.documents(KEPT, "rules") == kept_docs
    assert await index.count(KEPT) == kept_chunks
    assert len(await rt.api_keys.list(KEPT)) == 1
    assert (tenants_dir / "manifests" / f"{KEPT}.yaml").exists()
    found = await rt.search.search(operator(KEPT), ["rules"], "숙박비 한도", top_k=3)
    assert found.results and {r.document_id for r in found.results} <= kept_ids
    with pytest.raises(NotFound):
        await rt.search.search(operator(GONE), ["rules"], "숙박비 한도", top_k=3)


# ---------------------------------------------------------------------------- S3 buckets


def _s3(endpoint: str, tmp_path: Path) -> tuple[ObjectStoreReconciler, Any]:
    settings = ObjectStoreSettings(
        backend="s3",
        endpoint_url=endpoint,
        access_key_id="test",  # type: ignore[arg-type]
        secret_access_key="test",  # type: ignore[arg-type]
        bucket_prefix="tenancy-test-",
    )
    reconciler = ObjectStoreReconciler(
        settings, tmp_path, principals=["arn:aws:iam:::user/llmflow", "arn:aws:iam:::user/{tenant}"]
    )
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    return reconciler, client


async def test_buckets_with_policy_are_reconciled_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    reconciler, client = _s3(s3_endpoint, tmp_path)
    tenants = [TenantSpec(name=n, display_name=n) for n in ("dept-a", "dept-b", "dept-c")]

    plan = reconciler.plan(tenants, await reconciler.observe(tenants))
    assert {(c.name, c.operation) for c in plan} == {
        (f"tenancy-test-{n}", Operation.CREATE) for n in ("dept-a", "dept-b", "dept-c")
    }
    await reconciler.apply(plan)
    policy = json.loads(client.get_bucket_policy(Bucket="tenancy-test-dept-a")["Policy"])
    (statement,) = policy["Statement"]
    assert statement["Principal"]["AWS"] == [
        "arn:aws:iam:::user/llmflow",
        "arn:aws:iam:::user/dept-a",
    ]
    assert statement["Resource"][1] == "arn:aws:s3:::tenancy-test-dept-a/*"
    tags = client.get_bucket_tagging(Bucket="tenancy-test-dept-a")["TagSet"]
    assert {"Key": "llmflow.tenant", "Value": "dept-a"} in tags
    again = reconciler.plan(tenants, await reconciler.observe(tenants))
    assert {c.operation for c in again} == {Operation.UNCHANGED}

    # drift: a hand-set policy is an update
    client.put_bucket_policy(
        Bucket="tenancy-test-dept-b",
        Policy=json.dumps({**policy, "Statement": [{**statement, "Action": ["s3:*"]}]}),
    )
    drifted = [c for c in reconciler.plan(tenants, await reconciler.observe(tenants)) if c.pending]
    assert [(c.name, c.operation) for c in drifted] == [("tenancy-test-dept-b", Operation.UPDATE)]
    await reconciler.apply(drifted)

    # removed tenants: an empty bucket is deleted, one holding objects is kept for `delete`
    client.put_object(Bucket="tenancy-test-dept-c", Key="kb/x/original.pdf", Body=b"%PDF")
    remaining = tenants[:1]
    removal = reconciler.plan(remaining, await reconciler.observe(remaining))
    by_name = {c.name: c for c in removal}
    assert by_name["tenancy-test-dept-b"].operation is Operation.DELETE
    assert by_name["tenancy-test-dept-c"].operation is Operation.UNCHANGED
    assert "llmflow tenant delete dept-c" in by_name["tenancy-test-dept-c"].detail
    await reconciler.apply(removal)
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert "tenancy-test-dept-b" not in names and "tenancy-test-dept-c" in names

    purge = reconciler.purge_changes("dept-c", await reconciler.observe(remaining))
    assert [(c.name, c.operation) for c in purge] == [("tenancy-test-dept-c", Operation.DELETE)]
    await reconciler.apply(purge)
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert names >= {"tenancy-test-dept-a"} and "tenancy-test-dept-c" not in names
