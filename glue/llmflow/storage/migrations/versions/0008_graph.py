"""Knowledge graph (embedded store): nodes and edges, tenant- and KB-scoped; per-KB fusion.

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-22
"""

from alembic import op

from llmflow.graph.postgres import SCHEMA

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the same idempotent DDL the store runs in ensure_schema (IF NOT EXISTS)
    for statement in SCHEMA:
        op.execute(statement)
    # per-KB fusion of graph and hybrid results (NULL: the settings' default)
    op.execute("ALTER TABLE knowledge_bases ADD COLUMN graph_fusion varchar(16)")
    op.execute("ALTER TABLE knowledge_bases ADD COLUMN graph_weight double precision")


def downgrade() -> None:
    op.execute("ALTER TABLE knowledge_bases DROP COLUMN graph_weight")
    op.execute("ALTER TABLE knowledge_bases DROP COLUMN graph_fusion")
    op.execute("DROP TABLE IF EXISTS graph_edges")
    op.execute("DROP TABLE IF EXISTS graph_nodes")
