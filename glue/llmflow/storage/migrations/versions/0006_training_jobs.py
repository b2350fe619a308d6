"""Training: durable fine-tuning job records and the gateway's adapter routes.

* ``training_jobs``: one row per job (spec as submitted, the generated LLaMA-Factory config,
  dataset lineage, runner handle, attempts, MLflow run and model version).
* ``training_adapter_routes``: LoRA adapters deployed to the gateway (model name → base route
  and adapter path as the vLLM replicas see it); every glue replica merges them into its
  routing table (``llmflow.training.deploy``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE training_jobs (
            id varchar(32) PRIMARY KEY,
            tenant_id varchar(64) NOT NULL,
            name varchar(64) NOT NULL,
            status varchar(16) NOT NULL,
            runner varchar(16) NOT NULL,
            spec jsonb NOT NULL,
            config jsonb,
            lineage jsonb NOT NULL DEFAULT '{}'::jsonb,
            attempt integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL DEFAULT 1,
            handle varchar(256),
            output_dir text,
            error text,
            mlflow_run_id varchar(64),
            model_version varchar(32),
            cancel_requested boolean NOT NULL DEFAULT false,
            created_by varchar(256) NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX ix_training_jobs_tenant_time ON training_jobs (tenant_id, created_at)")
    op.execute(
        "CREATE INDEX ix_training_jobs_active ON training_jobs (status) "
        "WHERE status IN ('queued', 'running')"
    )
    op.execute(
        """
        CREATE TABLE training_adapter_routes (
            name varchar(200) PRIMARY KEY,
            tenant_id varchar(64) NOT NULL,
            lora_base varchar(200) NOT NULL,
            lora_path text NOT NULL,
            registered_model varchar(200) NOT NULL,
            version varchar(32) NOT NULL,
            alias varchar(64),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_training_adapter_routes_tenant ON training_adapter_routes (tenant_id)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE training_adapter_routes")
    op.execute("DROP TABLE training_jobs")
