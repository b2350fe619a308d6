"""The ``dataset_versions`` table (migration ``0005_dataset_versions``).

Declared on the platform's ``Base`` so that one metadata describes the schema; the data
itself lives in the object store under ``datasets/{name}/{version}/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from llmflow.storage.models import Base, JsonType, new_id, utcnow


class DatasetVersion(Base):
    """One immutable version of a tenant's dataset: where its files are, their hashes, the
    quality report and where it came from."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "version", name="uq_dataset_version"),
        UniqueConstraint("tenant_id", "name", "seq", name="uq_dataset_version_seq"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    content_sha256: Mapped[str] = mapped_column(String(64))
    train_rows: Mapped[int] = mapped_column(Integer)
    val_rows: Mapped[int] = mapped_column(Integer)
    files: Mapped[dict[str, Any]] = mapped_column(JsonType)
    source: Mapped[dict[str, Any]] = mapped_column(JsonType)
    report: Mapped[dict[str, Any]] = mapped_column(JsonType)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "content_sha256": self.content_sha256,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "mlflow_run_id": self.mlflow_run_id,
            "source": self.source,
        }
