"""Knowledge bases, documents and ingest jobs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile, status
from pydantic import BaseModel, Field

from llmflow.api.authz import allowed_kbs, authorize, authorize_kb, record_change
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.auth.policy.inputs import kb_resource
from llmflow.errors import InvalidRequest, NotFound, PayloadTooLarge
from llmflow.ingest.pipeline import Upload

router = APIRouter(prefix="/v1", tags=["knowledge bases"])


class KnowledgeBaseCreate(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", examples=["hr-rules"])
    description: str = Field(default="", max_length=2000)
    classification: Literal["public", "internal", "confidential", "secret"] = Field(
        default="internal",
        description="data classification: decides the PII policy at ingest and which models "
        "may see retrieved text",
    )
    graph_fusion: Literal["scores", "rrf"] | None = Field(
        default=None,
        description="how graph-mode search fuses graph and hybrid results in this KB "
        "(default: the platform setting graph.fusion)",
    )
    graph_weight: float | None = Field(
        default=None, ge=0.0, le=10.0, description="weight of the graph signal in this KB"
    )


class KnowledgeBaseOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    description: str
    classification: str
    embedding_model: str
    documents: int
    graph_fusion: str | None = None
    graph_weight: float | None = None


class JobOut(BaseModel):
    job_id: str
    document_id: str | None
    source: str
    status: str
    attempts: int
    error: dict[str, Any] | None
    stats: dict[str, Any]
    created_at: str | None
    finished_at: str | None
    document_status: str | None = None


class UploadOut(BaseModel):
    jobs: list[JobOut]


@router.get("/kb", response_model=list[KnowledgeBaseOut], responses=problem_responses(401, 503))
async def list_knowledge_bases(
    request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    """The caller's knowledge bases that the policy lets it read (``kb.read`` each)."""
    kbs = await rt.knowledge_bases.list(principal.tenant_id)
    allowed = await allowed_kbs(rt, principal, "kb.read", kbs, request=request)
    return [kb.to_dict() for kb in allowed]


@router.post(
    "/kb",
    response_model=KnowledgeBaseOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def create_knowledge_base(
    body: KnowledgeBaseCreate, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Create a knowledge base in the caller's tenant (``kb.admin``, checked against the
    tenant's classification ceiling)."""
    resource = kb_resource(principal.tenant_id, body.name, body.classification)
    await authorize(rt, principal, "kb.admin", resource, request=request)
    kb = await rt.knowledge_bases.create(
        principal.tenant_id,
        body.name,
        body.description,
        classification=body.classification,
        graph_fusion=body.graph_fusion,
        graph_weight=body.graph_weight,
    )
    await record_change(
        rt,
        principal,
        "kb.create",
        "knowledge_base",
        kb.name,
        request=request,
        details={"classification": kb.classification, "description": kb.description},
    )
    return kb.to_dict()


@router.get(
    "/kb/{kb}", response_model=KnowledgeBaseOut, responses=problem_responses(401, 403, 404, 503)
)
async def get_knowledge_base(
    kb: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    return (await authorize_kb(rt, principal, "kb.read", kb, request=request)).to_dict()


@router.delete(
    "/kb/{kb}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_knowledge_base(
    kb: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> None:
    """Delete a knowledge base with its documents from every store (``kb.admin``)."""
    info = await authorize_kb(rt, principal, "kb.admin", kb, request=request)
    await rt.ingest.delete_kb(principal.tenant_id, kb)
    await record_change(
        rt,
        principal,
        "kb.delete",
        "knowledge_base",
        kb,
        request=request,
        details={"classification": info.classification, "documents": info.documents},
    )


@router.post(
    "/kb/{kb}/documents",
    response_model=UploadOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 403, 404, 413, 422, 503),
)
async def upload_documents(
    kb: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    files: Annotated[list[UploadFile], File(description="one or more documents")],
) -> dict[str, Any]:
    """Upload documents; each becomes one ingest job. Returns at once (202): poll
    ``GET /v1/jobs/{id}``. A file over the size limit fails alone; the rest carry on."""
    await authorize_kb(rt, principal, "ingest", kb, request=request)
    settings = rt.settings
    if not files:
        raise InvalidRequest("send at least one file in the 'files' form field")
    if len(files) > settings.api.max_upload_files:
        raise PayloadTooLarge(f"at most {settings.api.max_upload_files} files per request")
    uploads: list[Upload] = []
    for f in files:
        # read at most one byte over the limit: enough to know it is too large
        data = await f.read(settings.ingest.max_file_bytes + 1)
        uploads.append(
            Upload(source=f.filename or "upload", data=data, content_type=f.content_type)
        )
    jobs = await rt.ingest.submit(principal.tenant_id, kb, uploads)
    return {"jobs": jobs}


@router.get("/kb/{kb}/documents", responses=problem_responses(401, 403, 404, 503))
async def list_documents(
    kb: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    await authorize_kb(rt, principal, "kb.read", kb, request=request)
    return await rt.ingest.documents(principal.tenant_id, kb)


@router.get("/kb/{kb}/documents/{document_id}", responses=problem_responses(401, 403, 404, 503))
async def get_document(
    kb: str, document_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    await authorize_kb(rt, principal, "kb.read", kb, request=request)
    return await rt.ingest.document(principal.tenant_id, kb, document_id)


@router.delete(
    "/kb/{kb}/documents/{document_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 403, 404, 503),
)
async def delete_document(
    kb: str, document_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> None:
    """Remove the document from the index, the object store and the metadata (``kb.write``)."""
    await authorize_kb(rt, principal, "kb.write", kb, request=request)
    await rt.ingest.delete_document(principal.tenant_id, kb, document_id)
    await record_change(
        rt,
        principal,
        "document.delete",
        "document",
        document_id,
        request=request,
        details={"knowledge_base": kb},
    )


@router.get(
    "/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses=problem_responses(401, 404)
)
async def get_job(job_id: str, rt: RuntimeDep, principal: PrincipalDep) -> dict[str, Any]:
    jobs = await rt.ingest.jobs(principal.tenant_id, [job_id])
    if not jobs:
        raise NotFound(f"job {job_id!r} does not exist")
    return jobs[0]


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"], responses=problem_responses(401))
async def get_jobs(
    rt: RuntimeDep, principal: PrincipalDep, ids: Annotated[list[str], Query(max_length=500)]
) -> list[dict[str, Any]]:
    return await rt.ingest.jobs(principal.tenant_id, ids)
