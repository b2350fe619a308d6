"""Data classification of a knowledge base (public, internal, confidential, secret).

The PII policy and the authorization policy both decide by it: what may be indexed, which
models may see retrieved text.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "knowledge_bases",
        sa.Column("classification", sa.String(16), nullable=False, server_default="internal"),
    )
    op.create_check_constraint(
        "ck_kb_classification",
        "knowledge_bases",
        "classification IN ('public', 'internal', 'confidential', 'secret')",
    )


def downgrade() -> None:
    op.drop_constraint("ck_kb_classification", "knowledge_bases", type_="check")
    op.drop_column("knowledge_bases", "classification")
