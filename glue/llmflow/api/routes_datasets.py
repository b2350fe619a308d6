"""Training datasets over HTTP: upload a file as a new version, list versions.

The tenant is the caller's (from the verified credential), never one from the form or the
query. Both endpoints are authorized as ``training.submit``: a dataset exists to be trained
on, and the policy grants that action to the roles that may start fine-tuning (the
``developer`` role); the dataset's classification goes into the decision.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from pydantic import BaseModel, Field

from llmflow.api.authz import authorize
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.training.datasets.errors import DatasetTooLarge
from llmflow.training.datasets.readers import SOURCE_KINDS, ColumnMapping, load_examples
from llmflow.training.datasets.service import DatasetService, check_name

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

ACTION = "training.submit"
Classification = Literal["public", "internal", "confidential", "secret"]


class DatasetVersionOut(BaseModel):
    name: str
    version: str
    format: str
    train_rows: int
    val_rows: int
    content_sha256: str
    created_at: str
    created_by: str
    mlflow_run_id: str | None
    source: dict[str, Any]


class DatasetImportOut(DatasetVersionOut):
    created: bool = Field(description="false: same content as the latest version, none written")
    report: dict[str, Any] = Field(description="the quality report (counts, lengths, PII)")
    mlflow: dict[str, Any] = Field(description="where the version was logged, or why not")


def _resource(tenant: str, name: str, classification: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "dataset", "tenant": tenant, "id": name}
    if classification is not None:
        doc["classification"] = classification
    return doc


@router.post(
    "",
    response_model=DatasetImportOut,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 403, 409, 413, 422, 503),
)
async def upload_dataset(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="a .csv, .jsonl, .json or .parquet file")],
    name: Annotated[str, Form(description="dataset name (lower-case, digits, - and _)")],
    classification: Annotated[
        Classification, Form(description="classification the PII policy is applied with")
    ] = "internal",
    format: Annotated[
        Literal["alpaca", "sharegpt"] | None, Form(description="default: from the data")
    ] = None,
    kind: Annotated[
        Literal["csv", "jsonl", "json", "parquet"] | None,
        Form(description="default: from the file name's extension"),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        Form(description="FIELD=COLUMN pairs (instruction, input, output, system, messages)"),
    ] = None,
    version: Annotated[str | None, Form(description="version label; default v<N>")] = None,
) -> dict[str, Any]:
    """Import an uploaded file as a new immutable version of ``name`` (PII scrubbed with the
    caller's tenant policy, deduplicated, split); 201 with the quality report."""
    check_name(name)
    tenant = principal.tenant_id
    await authorize(rt, principal, ACTION, _resource(tenant, name, classification), request=request)
    service = DatasetService(rt)
    caps = service.settings
    # read at most one byte over the cap: enough to know it is too large
    data = await file.read(caps.max_file_bytes + 1)
    file_name = file.filename or f"upload.{kind or 'jsonl'}"
    if len(data) > caps.max_file_bytes:
        raise DatasetTooLarge(
            f"{file_name} is over the cap of {caps.max_file_bytes} bytes "
            "(Settings.datasets.max_file_bytes)"
        )
    assert kind is None or kind in SOURCE_KINDS
    column_mapping = ColumnMapping.parse(mapping or [])
    rows = await asyncio.to_thread(
        load_examples,
        data,
        file_name,
        kind,
        column_mapping,
        max_bytes=caps.max_file_bytes,
        max_rows=caps.max_rows,
        max_field_chars=caps.max_field_chars,
    )
    result = await service.import_source(
        tenant,
        name,
        rows,
        {
            "kind": kind or file_name.rsplit(".", 1)[-1],
            "file": file_name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        },
        fmt=format,
        version=version,
        classification=classification,
        created_by=principal.subject,
    )
    return result.to_dict()


@router.get("", response_model=list[DatasetVersionOut], responses=problem_responses(401, 403))
async def list_datasets(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    name: Annotated[str | None, Query(description="only this dataset")] = None,
) -> list[dict[str, Any]]:
    """The versions of the caller's tenant's datasets, oldest first."""
    tenant = principal.tenant_id
    await authorize(rt, principal, ACTION, _resource(tenant, name or "*"), request=request)
    return [v.summary() for v in await DatasetService(rt).versions(tenant, name)]
