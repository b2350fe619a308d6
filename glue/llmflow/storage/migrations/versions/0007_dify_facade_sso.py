"""Dify: ERP facade apps, runs and idempotency keys; SSO-provisioned Dify accounts.

* ``facade_apps``: one registered Dify app per tenant and name; the Dify app key sealed
  (AES-GCM, ``llmflow.dify.secrets``), never returned by an API.
* ``facade_runs``: one row per run (blocking, streaming or async), with the caller's
  ``Idempotency-Key`` and the SHA-256 of the request it came with; ``expires_at`` bounds how
  long the key is honoured (rows past it are purged by the writer).
* ``facade_tenant_secrets``: the per-tenant HMAC secret of async callbacks (sealed).
* ``dify_sso_accounts``: the Dify accounts the SSO bridge provisioned, with their per-user
  random password (sealed; the user never sees it).

Revision ID: 0007
Revises: 0004
Create Date: 2026-11-22
"""

from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE facade_apps (
            id varchar(32) PRIMARY KEY,
            tenant_id varchar(64) NOT NULL,
            name varchar(64) NOT NULL,
            mode varchar(16) NOT NULL,
            dify_url varchar(1024) NOT NULL,
            app_key_sealed text NOT NULL,
            description text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT uq_facade_apps_tenant_name UNIQUE (tenant_id, name),
            CONSTRAINT ck_facade_apps_mode CHECK (mode IN ('workflow', 'chat'))
        )
        """
    )
    op.execute(
        """
        CREATE TABLE facade_runs (
            id varchar(32) PRIMARY KEY,
            tenant_id varchar(64) NOT NULL,
            app_name varchar(64) NOT NULL,
            subject varchar(256) NOT NULL,
            client_id varchar(256),
            mode varchar(16) NOT NULL,
            delivery varchar(16) NOT NULL,
            status varchar(16) NOT NULL,
            idempotency_key varchar(255),
            request_hash varchar(64) NOT NULL,
            workflow_run_id varchar(64),
            task_id varchar(64),
            conversation_id varchar(64),
            message_id varchar(64),
            result jsonb,
            error jsonb,
            callback_url varchar(2048),
            callback_status varchar(16),
            callback_attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_facade_runs_idempotency ON facade_runs (tenant_id, idempotency_key)"
        " WHERE idempotency_key IS NOT NULL"
    )
    op.execute("CREATE INDEX ix_facade_runs_tenant_created ON facade_runs (tenant_id, created_at)")
    op.execute("CREATE INDEX ix_facade_runs_expires ON facade_runs (expires_at)")
    op.execute(
        """
        CREATE TABLE facade_tenant_secrets (
            tenant_id varchar(64) PRIMARY KEY,
            callback_secret_sealed text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE dify_sso_accounts (
            tenant_id varchar(64) NOT NULL,
            email varchar(320) NOT NULL,
            keycloak_subject varchar(64) NOT NULL,
            dify_account_id varchar(64),
            dify_role varchar(16) NOT NULL,
            password_sealed text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_login_at timestamptz,
            PRIMARY KEY (tenant_id, email)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE dify_sso_accounts")
    op.execute("DROP TABLE facade_tenant_secrets")
    op.execute("DROP TABLE facade_runs")
    op.execute("DROP TABLE facade_apps")
