"""Alembic environment: runs our migrations against the URL handed in by ``migrate()``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from llmflow.storage.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "migrate() sets sqlalchemy.url"

engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
