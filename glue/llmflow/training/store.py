"""Training job records in PostgreSQL (migration ``0006``): durable across restarts, shared by
every glue replica and the CLI."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from llmflow.errors import NotFound


class TrainingStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TrainingStatus.SUCCEEDED, TrainingStatus.FAILED, TrainingStatus.CANCELLED)


@dataclass(slots=True)
class TrainingJob:
    """One fine-tuning job as recorded."""

    id: str
    tenant_id: str
    name: str
    status: TrainingStatus
    runner: str
    spec: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
    max_attempts: int = 1
    attempt: int = 0
    config: dict[str, Any] | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    handle: str | None = None
    output_dir: str | None = None
    error: str | None = None
    mlflow_run_id: str | None = None
    model_version: str | None = None
    cancel_requested: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API's view (no runner handle: a pid or Job name is not the caller's business)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "name": self.name,
            "status": self.status.value,
            "runner": self.runner,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "spec": self.spec,
            "config": self.config,
            "lineage": self.lineage,
            "output_dir": self.output_dir,
            "error": self.error,
            "mlflow_run_id": self.mlflow_run_id,
            "model_version": self.model_version,
            "cancel_requested": self.cancel_requested,
            "created_by": self.created_by,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "updated_at": iso(self.updated_at),
        }


_COLUMNS = (
    "id, tenant_id, name, status, runner, spec, config, lineage, attempt, max_attempts, handle, "
    "output_dir, error, mlflow_run_id, model_version, cancel_requested, created_by, created_at, "
    "started_at, finished_at, updated_at"
)
_JSON_FIELDS = ("spec", "config", "lineage")
_UPDATABLE = frozenset(
    {
        "status", "config", "lineage", "attempt", "handle", "output_dir", "error",
        "mlflow_run_id", "model_version", "cancel_requested", "started_at", "finished_at",
    }
)  # fmt: skip


def _row(row: Any) -> TrainingJob:
    data = dict(row._mapping)
    data["status"] = TrainingStatus(data["status"])
    data["lineage"] = data.get("lineage") or {}
    return TrainingJob(**data)


class TrainingJobStore:
    """CRUD of ``training_jobs``; every read is scoped to a tenant."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self,
        tenant_id: str,
        name: str,
        runner: str,
        spec: dict[str, Any],
        created_by: str,
        max_attempts: int,
    ) -> TrainingJob:
        job_id = uuid.uuid4().hex
        async with self._sessions() as s, s.begin():
            row = (
                await s.execute(
                    text(
                        "INSERT INTO training_jobs (id, tenant_id, name, status, runner, spec, "
                        "created_by, max_attempts) VALUES (:id, :tenant, :name, 'queued', "
                        f":runner, CAST(:spec AS jsonb), :by, :max) RETURNING {_COLUMNS}"
                    ),
                    {
                        "id": job_id,
                        "tenant": tenant_id,
                        "name": name,
                        "runner": runner,
                        "spec": json.dumps(spec),
                        "by": created_by,
                        "max": max_attempts,
                    },
                )
            ).one()
        return _row(row)

    async def get(self, tenant_id: str, job_id: str) -> TrainingJob:
        """The job, 404 when it does not exist in ``tenant_id`` (other tenants' ids included)."""
        async with self._sessions() as s:
            row = (
                await s.execute(
                    text(f"SELECT {_COLUMNS} FROM training_jobs WHERE id = :id AND tenant_id = :t"),
                    {"id": job_id, "t": tenant_id},
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"training job {job_id!r} does not exist")
        return _row(row)

    async def recent(self, tenant_id: str, limit: int = 50) -> list[TrainingJob]:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM training_jobs WHERE tenant_id = :t "
                        "ORDER BY created_at DESC LIMIT :limit"
                    ),
                    {"t": tenant_id, "limit": limit},
                )
            ).all()
        return [_row(r) for r in rows]

    async def active(self) -> list[TrainingJob]:
        """Queued and running jobs of every tenant (to resume supervision after a restart)."""
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM training_jobs "
                        "WHERE status IN ('queued', 'running') ORDER BY created_at"
                    )
                )
            ).all()
        return [_row(r) for r in rows]

    async def update(self, job_id: str, **changes: Any) -> TrainingJob:
        bad = set(changes) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets: list[str] = []
        params: dict[str, Any] = {"id": job_id}
        for key, value in changes.items():
            if key in _JSON_FIELDS:
                sets.append(f"{key} = CAST(:{key} AS jsonb)")
                params[key] = None if value is None else json.dumps(value)
            else:
                sets.append(f"{key} = :{key}")
                params[key] = value.value if isinstance(value, StrEnum) else value
        sets.append("updated_at = now()")
        async with self._sessions() as s, s.begin():
            row = (
                await s.execute(
                    text(
                        f"UPDATE training_jobs SET {', '.join(sets)} WHERE id = :id "
                        f"RETURNING {_COLUMNS}"
                    ),
                    params,
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"training job {job_id!r} does not exist")
        return _row(row)


@dataclass(frozen=True, slots=True)
class AdapterRoute:
    """A deployed adapter as the gateway routes it."""

    name: str
    tenant_id: str
    lora_base: str
    lora_path: str
    registered_model: str
    version: str
    alias: str | None


class AdapterRouteStore:
    """``training_adapter_routes``: the dynamic part of the gateway's routing table."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def upsert(self, route: AdapterRoute) -> None:
        async with self._sessions() as s, s.begin():
            owner = (
                await s.execute(
                    text("SELECT tenant_id FROM training_adapter_routes WHERE name = :n"),
                    {"n": route.name},
                )
            ).scalar_one_or_none()
            if owner is not None and owner != route.tenant_id:
                from llmflow.errors import Conflict

                raise Conflict(f"the model name {route.name!r} belongs to another tenant")
            await s.execute(
                text(
                    "INSERT INTO training_adapter_routes (name, tenant_id, lora_base, lora_path, "
                    "registered_model, version, alias) VALUES (:name, :tenant_id, :lora_base, "
                    ":lora_path, :registered_model, :version, :alias) ON CONFLICT (name) DO "
                    "UPDATE SET lora_base = EXCLUDED.lora_base, lora_path = EXCLUDED.lora_path, "
                    "registered_model = EXCLUDED.registered_model, version = EXCLUDED.version, "
                    "alias = EXCLUDED.alias, updated_at = now()"
                ),
                {
                    "name": route.name,
                    "tenant_id": route.tenant_id,
                    "lora_base": route.lora_base,
                    "lora_path": route.lora_path,
                    "registered_model": route.registered_model,
                    "version": route.version,
                    "alias": route.alias,
                },
            )

    async def get(self, name: str) -> AdapterRoute | None:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT name, tenant_id, lora_base, lora_path, registered_model, version, "
                        "alias FROM training_adapter_routes WHERE name = :n"
                    ),
                    {"n": name},
                )
            ).one_or_none()
        return AdapterRoute(**dict(row._mapping)) if row is not None else None

    async def all(self) -> list[AdapterRoute]:
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT name, tenant_id, lora_base, lora_path, registered_model, version, "
                        "alias FROM training_adapter_routes ORDER BY name"
                    )
                )
            ).all()
        return [AdapterRoute(**dict(r._mapping)) for r in rows]
