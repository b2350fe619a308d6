"""Audit events, range-partitioned by month on ``created_at`` (ARCHITECTURE §10).

Monthly partitions (``audit_events_YYYY_MM``) are created on demand by the audit writer
(``llmflow.observability.audit``) before it inserts into a new month; the ``DEFAULT``
partition catches any row whose month has no partition yet, so an insert never fails for
want of one. Old months are dropped whole (``DROP TABLE audit_events_2026_01``), which is the
reason for partitioning: retention without a ``DELETE`` over the whole table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE audit_events (
            id            varchar(32)  NOT NULL,
            created_at    timestamptz  NOT NULL DEFAULT now(),
            tenant_id     varchar(64)  NOT NULL,
            actor         varchar(255) NOT NULL,
            actor_kind    varchar(16)  NOT NULL,
            action        varchar(64)  NOT NULL,
            resource_type varchar(64)  NOT NULL,
            resource_id   varchar(255) NOT NULL DEFAULT '',
            decision      varchar(8)   NOT NULL,
            reason        text         NOT NULL DEFAULT '',
            request_id    varchar(64),
            details       jsonb        NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT pk_audit_events PRIMARY KEY (id, created_at),
            CONSTRAINT ck_audit_events_decision CHECK (decision IN ('allow', 'deny'))
        ) PARTITION BY RANGE (created_at)
        """
    )
    op.execute("CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT")
    # A partitioned index: PostgreSQL creates it on every partition, present and future.
    op.execute(
        "CREATE INDEX ix_audit_events_tenant_created "
        "ON audit_events (tenant_id, created_at, id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE audit_events CASCADE")
