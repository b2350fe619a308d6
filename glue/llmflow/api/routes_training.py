"""Fine-tuning jobs over HTTP: ``/v1/training/jobs``.

The tenant is the verified principal's, never one from the body or path: a job id of another
tenant answers 404 like an unknown one. Every call asks the policy for ``training.submit``
(developer and platform-admin, ``policies/opa``), with the GPUs asked for as context so the
tenant's GPU quota applies; reading jobs and logs needs the same right, as jobs show dataset
names and training output.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from llmflow.api.authz import authorize
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.auth.principal import Principal
from llmflow.errors import InvalidRequest
from llmflow.runtime import Runtime
from llmflow.training.config import TrainingSpec
from llmflow.training.jobs import TrainingService, training_service

router = APIRouter(prefix="/v1/training", tags=["training"])


class TrainingJobOut(BaseModel):
    id: str
    tenant_id: str
    name: str
    status: str
    runner: str
    attempt: int
    max_attempts: int
    spec: dict[str, Any]
    config: dict[str, Any] | None
    lineage: dict[str, Any]
    output_dir: str | None
    error: str | None
    mlflow_run_id: str | None
    model_version: str | None
    cancel_requested: bool
    created_by: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None


class TrainingJobList(BaseModel):
    jobs: list[TrainingJobOut]


async def _allowed(
    rt: Runtime, principal: Principal, request: Request, resource_id: str, gpus: int = 0
) -> TrainingService:
    if not principal.tenant_id:
        raise InvalidRequest("the credential carries no tenant")
    await authorize(
        rt,
        principal,
        "training.submit",
        {"type": "training_job", "tenant": principal.tenant_id, "id": resource_id},
        {"gpus": gpus},
        request=request,
    )
    return training_service(rt)


@router.post(
    "/jobs",
    status_code=202,
    response_model=TrainingJobOut,
    responses=problem_responses(401, 403, 422, 503),
)
async def submit_job(
    spec: TrainingSpec, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Queue a fine-tuning job (LoRA, QLoRA, or full where the profile allows it) on a
    dataset version of the caller's tenant. 202: poll ``GET /v1/training/jobs/{id}``."""
    service = await _allowed(rt, principal, request, spec.name, spec.gpus)
    job = await service.submit(principal.tenant_id, principal.subject, spec)
    return job.to_dict()


@router.get("/jobs", response_model=TrainingJobList, responses=problem_responses(401, 403))
async def list_jobs(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The tenant's jobs, newest first."""
    service = await _allowed(rt, principal, request, "*")
    return {"jobs": [j.to_dict() for j in await service.recent(principal.tenant_id, limit)]}


@router.get(
    "/jobs/{job_id}", response_model=TrainingJobOut, responses=problem_responses(401, 403, 404)
)
async def get_job(
    job_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Status, attempts, generated config, lineage, MLflow run and registered version."""
    service = await _allowed(rt, principal, request, job_id)
    return (await service.get(principal.tenant_id, job_id)).to_dict()


@router.get(
    "/jobs/{job_id}/logs",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 403, 404)},
)
async def job_logs(
    job_id: str,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    follow: Annotated[bool, Query(description="keep streaming until the job ends")] = False,
) -> StreamingResponse:
    """The trainer's output (every attempt), streamed as it is written with ``follow=true``."""
    service = await _allowed(rt, principal, request, job_id)
    await service.get(principal.tenant_id, job_id)  # 404 before the stream starts
    return StreamingResponse(
        service.logs(principal.tenant_id, job_id, follow=follow),
        media_type="text/plain; charset=utf-8",
        headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"},
    )


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=TrainingJobOut,
    responses=problem_responses(401, 403, 404),
)
async def cancel_job(
    job_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Stop the job (the running attempt is terminated); a finished job is returned as is."""
    service = await _allowed(rt, principal, request, job_id)
    return (await service.cancel(principal.tenant_id, job_id)).to_dict()


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=TrainingJobOut,
    responses=problem_responses(401, 403, 404, 409),
)
async def retry_job(
    job_id: str, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """One more attempt of a failed or cancelled job, resumed from its newest checkpoint."""
    service = await _allowed(rt, principal, request, job_id)
    return (await service.retry(principal.tenant_id, job_id)).to_dict()
