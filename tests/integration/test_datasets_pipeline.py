"""Every file in ../shared/datasets/documents through the whole pipeline: indexed with its
chunks in Milvus, or failed with a clear reason and nothing left in the index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmflow.ingest.pipeline import Upload

pytestmark = [pytest.mark.integration, pytest.mark.datasets]


async def test_every_dataset_document_indexed_or_failed_clearly(
    runtime: Any, datasets_dir: Path
) -> None:
    files = sorted(
        p
        for p in (datasets_dir / "documents").rglob("*")
        if p.is_file() and not p.name.startswith("LICENSE")
    )
    assert len(files) > 40
    await runtime.knowledge_bases.create("datasets", "docs", exist_ok=True)
    uploads = [
        Upload(str(p.relative_to(datasets_dir / "documents")), p.read_bytes()) for p in files
    ]
    jobs = await runtime.ingest.submit("datasets", "docs", uploads)
    await runtime.jobs.drain()
    jobs = await runtime.ingest.jobs("datasets", [j["job_id"] for j in jobs])
    docs = {d["source"]: d for d in await runtime.ingest.documents("datasets", "docs")}
    index = await runtime.index()
    report = []
    for job in jobs:
        doc = docs[job["source"]]
        stored = await index.count("datasets", document_id=doc["id"])
        report.append(
            (job["source"], job["status"], doc["chunks"], (job["error"] or {}).get("reason"))
        )
        assert job["status"] in ("succeeded", "failed"), job
        if job["status"] == "succeeded":
            assert doc["status"] == "indexed" and doc["chunks"] > 0 and stored == doc["chunks"]
        else:
            assert doc["status"] == "failed" and stored == 0
            assert job["error"]["reason"] in (
                "encrypted",
                "corrupt",
                "empty",
                "unsupported_format",
                "too_large",
            )
            assert (
                len(job["error"]["message"]) > 10
                and job["source"].split("/")[-1] in job["error"]["message"]
            )
    print("\n".join(f"{s:60} {st:10} {c:4} {r or ''}" for s, st, c, r in report))
    ok = sum(1 for _, st, _, _ in report if st == "succeeded")
    # the deliberately broken files are few: most of the set must index
    assert ok >= len(files) - 6
    by_name = {Path(s).name: st for s, st, _, _ in report}
    for must in (
        "pdf_korean-text-with-tables.pdf",
        "hwpxlib_Table.hwpx",
        "hwplib_merging-cell.hwp",
        "img_english-and-korean.png",
        "example-steelJIS-datasheet-utf-16.html",
    ):
        assert by_name[must] == "succeeded", must
    for broken in ("pdf_password.pdf", "password_protected.xlsx", "eml_empty.eml"):
        assert by_name[broken] == "failed", broken
