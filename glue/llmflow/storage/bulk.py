"""Bulk inserts with PostgreSQL's ``COPY … FROM STDIN``, inside an ORM session's transaction.

The gateway writes a usage row and an audit event per call from background batches that
share the event loop with the requests in flight. An ``executemany`` of 50 rows through
SQLAlchemy and psycopg's pipeline cost ~5 ms of that loop (parameters processed and a
message built per row); ``COPY`` sends the rows as one stream encoded by psycopg's C
implementation, for a fraction of that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession


def jsonb(value: Any) -> Jsonb:
    """A value for a ``jsonb`` column in :func:`copy_rows`."""
    return Jsonb(value)


async def copy_rows(
    session: AsyncSession, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table`` in the session's current
    transaction; rows of a partitioned table go to their partitions as with ``INSERT``."""
    connection = await session.connection()
    raw = (await connection.get_raw_connection()).driver_connection
    if raw is None:
        raise RuntimeError("the session's connection is closed")
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    async with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)
