"""ERP facade: blocking and streaming runs are leased too (docs/erp-facade.md, "Restarts").

Migration 0009's ``owner`` / ``lease_until`` now also cover blocking and streaming runs that
are written before they end (keyed blocking runs, every streaming run): a row whose lease
has passed belongs to a process that died (or a streaming client that went away), and
recovery fails it ``interrupted``. 0009's partial index covers only async rows; this one
covers the running blocking/streaming rows the recovery scan looks for, so the scan (every
``facade.recovery_interval_s`` on every replica) reads two small partial indexes instead of
the whole, ever-growing run table.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_facade_runs_request_running ON facade_runs (lease_until) "
        "WHERE delivery <> 'async' AND status = 'running'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_facade_runs_request_running")
