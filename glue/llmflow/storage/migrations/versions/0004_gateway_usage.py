"""LLM gateway: usage ledger and quota counters.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE gateway_usage (
            id bigserial PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            tenant_id varchar(64) NOT NULL,
            subject varchar(256) NOT NULL,
            model varchar(200) NOT NULL,
            backend varchar(500) NOT NULL DEFAULT '',
            prompt_tokens integer NOT NULL DEFAULT 0,
            completion_tokens integer NOT NULL DEFAULT 0,
            latency_ms double precision NOT NULL,
            ttft_ms double precision,
            status smallint NOT NULL,
            stream boolean NOT NULL DEFAULT false,
            error_code varchar(64)
        )
        """
    )
    op.execute("CREATE INDEX ix_gateway_usage_tenant_time ON gateway_usage (tenant_id, created_at)")
    # One row per tenant and window ("m:2026-11-22T13:41", "d:2026-11-22"); old windows
    # are pruned by the writer's housekeeping.
    op.execute(
        """
        CREATE TABLE gateway_quota_counters (
            tenant_id varchar(64) NOT NULL,
            window_key varchar(32) NOT NULL,
            value bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, window_key)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE gateway_quota_counters")
    op.execute("DROP TABLE gateway_usage")
