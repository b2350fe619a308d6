"""ERP facade: async runs that survive a restart (docs/erp-facade.md, "Restarts").

``facade_runs`` gains what another process needs to finish an async run whose process died:

* ``dify_user_sealed``: the end-user label the run was sent to Dify with (Dify's ``GET
  /v1/messages`` only lists a conversation to the user that owns it), sealed like the app
  keys (``llmflow.dify.secrets``): a label may name a person.
* ``owner`` / ``lease_until``: the process executing the run (or delivering its callback)
  and until when its claim holds; the executing process keeps pushing ``lease_until``
  forward, so a row whose lease has passed belongs to a dead process and may be claimed.
* ``pii_inbound``: the entity types (counts, never values) the prompt guard replaced before
  the run went to Dify: a recovered answer still carries those pseudonyms.
* ``callback_next_attempt_at`` / ``callback_delivered_at`` / ``callback_error``: the
  delivery state of the signed callback, so that retries continue after a restart.

The partial index covers the recovery scan (async rows with work left).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE facade_runs
            ADD COLUMN dify_user_sealed text,
            ADD COLUMN owner varchar(128),
            ADD COLUMN lease_until timestamptz,
            ADD COLUMN pii_inbound jsonb,
            ADD COLUMN callback_next_attempt_at timestamptz,
            ADD COLUMN callback_delivered_at timestamptz,
            ADD COLUMN callback_error varchar(256)
        """
    )
    op.execute(
        "CREATE INDEX ix_facade_runs_unfinished ON facade_runs (lease_until) "
        "WHERE delivery = 'async' AND (status = 'running' OR callback_status = 'pending')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_facade_runs_unfinished")
    op.execute(
        """
        ALTER TABLE facade_runs
            DROP COLUMN callback_error,
            DROP COLUMN callback_delivered_at,
            DROP COLUMN callback_next_attempt_at,
            DROP COLUMN pii_inbound,
            DROP COLUMN lease_until,
            DROP COLUMN owner,
            DROP COLUMN dify_user_sealed
        """
    )
