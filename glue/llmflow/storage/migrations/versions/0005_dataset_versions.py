"""Training datasets: one row per immutable dataset version (files in the object store).

Revision 0005 is chained after 0007 (the Dify facade tables, written in parallel and also
based on 0004) so that the history has one head; Alembic orders by ``down_revision``, not by
the number in the file name.

Revision ID: 0005
Revises: 0007
Create Date: 2026-11-22
"""

from alembic import op

revision = "0005"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dataset_versions (
            id varchar(32) PRIMARY KEY,
            tenant_id varchar(64) NOT NULL,
            name varchar(64) NOT NULL,
            version varchar(32) NOT NULL,
            seq integer NOT NULL,
            format varchar(16) NOT NULL,
            content_sha256 varchar(64) NOT NULL,
            train_rows integer NOT NULL,
            val_rows integer NOT NULL,
            files jsonb NOT NULL,
            source jsonb NOT NULL,
            report jsonb NOT NULL,
            mlflow_run_id varchar(64),
            created_by varchar(256) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_dataset_version UNIQUE (tenant_id, name, version),
            CONSTRAINT uq_dataset_version_seq UNIQUE (tenant_id, name, seq),
            CONSTRAINT ck_dataset_versions_format CHECK (format IN ('alpaca', 'sharegpt'))
        )
        """
    )
    op.execute("CREATE INDEX ix_dataset_versions_tenant ON dataset_versions (tenant_id, name)")


def downgrade() -> None:
    op.execute("DROP TABLE dataset_versions")
