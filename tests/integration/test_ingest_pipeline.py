"""The ingest pipeline on real engines: idempotency, versioning, failure cleanup, retries."""

from __future__ import annotations

from typing import Any

import pytest

from llmflow.ingest.pipeline import Upload

pytestmark = pytest.mark.integration

DOC = (
    "# 복리후생 규정\n\n## 제3조(경조금)\n\n본인 결혼 시 경조금 50만원과 특별휴가 5일을 지급한다.\n"
)


async def ingest(rt: Any, tenant: str, kb: str, uploads: list[Upload]) -> list[dict[str, Any]]:
    jobs = await rt.ingest.submit(tenant, kb, uploads)
    await rt.jobs.drain()
    return await rt.ingest.jobs(tenant, [j["job_id"] for j in jobs])


async def test_idempotent_and_versioned(runtime: Any) -> None:
    await runtime.knowledge_bases.create("pipe", "kb", exist_ok=True)
    (job,) = await ingest(runtime, "pipe", "kb", [Upload("welfare.md", DOC.encode())])
    assert job["status"] == "succeeded" and job["stats"]["chunks"] >= 1
    assert {"partition_s", "embed_s", "lexical_s", "index_s"} <= set(job["stats"])
    doc = await runtime.ingest.document("pipe", "kb", job["document_id"])
    assert doc["status"] == "indexed" and doc["version"] == 1 and doc["language"] == "ko"

    (again,) = await ingest(runtime, "pipe", "kb", [Upload("welfare.md", DOC.encode())])
    assert again["status"] == "skipped"

    (v2,) = await ingest(
        runtime, "pipe", "kb", [Upload("welfare.md", DOC.replace("50만원", "70만원").encode())]
    )
    assert v2["status"] == "succeeded" and v2["document_id"] == job["document_id"]
    index = await runtime.index()
    rows = index.client.query(
        index.collection,
        filter=f'document_id == "{job["document_id"]}"',
        output_fields=["doc_version", "text"],
    )
    assert rows and {r["doc_version"] for r in rows} == {2}
    assert any("70만원" in r["text"] for r in rows)


async def test_failure_leaves_nothing_half_indexed(
    runtime: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await runtime.knowledge_bases.create("pipe", "kb2", exist_ok=True)
    (ok,) = await ingest(runtime, "pipe", "kb2", [Upload("a.md", DOC.encode())])
    doc_id = ok["document_id"]
    index = await runtime.index()
    before = await index.count("pipe", document_id=doc_id)

    real_insert = index.insert

    async def insert_then_crash(records: list[Any]) -> None:
        await real_insert(records[: max(1, len(records) // 2)])
        raise ConnectionError("milvus went away mid-write")

    monkeypatch.setattr(index, "insert", insert_then_crash)
    changed = DOC + "\n## 제4조(조의금)\n\n부모 사망 시 조의금 100만원을 지급한다.\n"
    jobs = await runtime.ingest.submit("pipe", "kb2", [Upload("a.md", changed.encode())])
    with pytest.raises(ConnectionError):
        await runtime.ingest.process(jobs[0]["job_id"], final_attempt=True)
    monkeypatch.undo()

    (job,) = await runtime.ingest.jobs("pipe", [jobs[0]["job_id"]])
    assert job["status"] == "failed" and job["error"]["reason"] == "internal_error"
    # the new version's partial chunks are gone; the old indexed version is still searchable
    rows = index.client.query(
        index.collection, filter=f'document_id == "{doc_id}"', output_fields=["doc_version"]
    )
    assert {r["doc_version"] for r in rows} == {1} and len(rows) == before


async def test_broken_file_fails_alone(runtime: Any) -> None:
    await runtime.knowledge_bases.create("pipe", "kb3", exist_ok=True)
    jobs = await ingest(
        runtime,
        "pipe",
        "kb3",
        [
            Upload("good.md", DOC.encode()),
            Upload("bad.docx", b"PK\x03\x04 this is not a real docx"),
            Upload("huge.txt", b"x" * (runtime.settings.ingest.max_file_bytes + 1)),
        ],
    )
    by = {j["source"]: j for j in jobs}
    assert by["good.md"]["status"] == "succeeded"
    assert by["bad.docx"]["status"] == "failed" and by["bad.docx"]["error"]["message"]
    assert by["huge.txt"]["status"] == "failed" and by["huge.txt"]["error"]["reason"] == "too_large"
    index = await runtime.index()
    assert await index.count("pipe", document_id=by["bad.docx"]["document_id"]) == 0
