"""Apply Alembic migrations programmatically (no alembic.ini needed on the install host)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from llmflow.storage.database import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is an INI parser: '%' must be doubled.
    cfg.set_main_option("sqlalchemy.url", db.sqlalchemy_url.replace("%", "%%"))
    return cfg


def migrate(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; takes a lock in PostgreSQL)."""
    command.upgrade(alembic_config(db), revision)
