"""The hottest statements, run past SQLAlchemy's execute on PostgreSQL: the API's reads of one resource by
id, the engine's claim and its batch of outcomes.

SQLAlchemy's execute (building the statement's cache key, execution context, result machinery, a greenlet
switch around the round trip) cost 0.3-0.4 ms of CPU per read on the bench machine, more than the rest of
the request (bench/api.py), and 40 µs per claimed message. These statements are compiled once and run on the
asyncpg connection of a connection checked out of the same pool, in autocommit (each is one statement), and
errors are treated as SQLAlchemy would (`_discard_after`). On SQLite they are ordinary executes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from mailer.store.outage import is_disconnect

_PG_DIALECT = pg_asyncpg.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy


class DirectStatement:
    """One statement, compiled once for PostgreSQL; `json_columns` are decoded as SQLAlchemy's JSON type
    would (asyncpg hands them back as text)."""

    def __init__(self, statement: Executable, json_columns: tuple[str, ...] = ()) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=_PG_DIALECT)  # type: ignore[attr-defined]
        self.pg_sql = str(compiled)
        # asyncpg takes positional arguments; the statement's own literals (a LIMIT 1) are bound values too.
        self._pg_names: list[str] = list(compiled.positiontup or ())
        self._pg_literals = dict(compiled.params)
        # SQLAlchemy's JSON type decodes these; asyncpg under SQLAlchemy hands them back as text.
        self._json_columns = json_columns

    def pg_args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self._pg_literals[name] for name in self._pg_names]

    def decoded(self, record: Any) -> dict[str, Any]:
        row: dict[str, Any] = dict(record.items())
        for name in self._json_columns:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        return row


async def fetch_one(
    db: AsyncEngine, read: DirectStatement, params: Mapping[str, Any]
) -> Mapping[Any, Any] | None:
    """The one row of a read with `params`, or None (on SQLite outside any transaction)."""
    if db.dialect.name != "postgresql":
        async with db.connect() as conn:
            row: RowMapping | None = (await conn.execute(read.statement, params)).mappings().one_or_none()
        return row
    record = await _on_driver(db, lambda driver: driver.fetchrow(read.pg_sql, *read.pg_args(params)))
    return None if record is None else read.decoded(record)


async def fetch_all(
    db: AsyncEngine, statement: DirectStatement, params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """Every row a statement returns (a change with RETURNING, too: on SQLite it runs in a transaction)."""
    if db.dialect.name != "postgresql":
        async with db.begin() as conn:
            return list((await conn.execute(statement.statement, params)).mappings().all())
    records = await _on_driver(db, lambda driver: driver.fetch(statement.pg_sql, *statement.pg_args(params)))
    return [statement.decoded(record) for record in records]


async def _on_driver[T](db: AsyncEngine, call: Callable[[Any], Awaitable[T]]) -> T:
    """`call` on the asyncpg connection of a connection checked out of `db`'s pool."""
    dbapi_error = db.dialect.loaded_dbapi.Error
    try:
        pooled = await db.raw_connection()
    except dbapi_error as exc:
        # Wrapped as `db.connect()` raises it (a DBAPIError without a statement: "could not connect"), which
        # the problem middleware answers 503 and the engine's outage handling retries.
        raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=db.dialect) from exc
    driver = pooled.driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    try:
        return await call(driver)
    except Exception as exc:
        # Translated first: discarding the connection takes its adapter (which translates) away.
        error = _as_sqlalchemy_error(db, pooled, exc)
        _discard_after(db, pooled, exc)
        raise error from exc
    except BaseException as exc:  # a cancel mid-statement: the connection's state is unknown
        _discard_after(db, pooled, exc)
        raise
    finally:
        # In a greenlet like every SQLAlchemy pool operation: returning a connection may need I/O.
        await greenlet_spawn(pooled.close)


def _as_sqlalchemy_error(db: AsyncEngine, pooled: Any, exc: Exception) -> Exception:
    """`exc` as SQLAlchemy's execute would raise it (IntegrityError, OperationalError, …, with
    `connection_invalidated` set after a disconnect), so that callers handle one family of errors."""
    dbapi_error = db.dialect.loaded_dbapi.Error
    try:
        # The adapter's own translation of asyncpg's errors into DB-API ones (it always raises).
        pooled.dbapi_connection._handle_exception(exc)
    except dbapi_error as translated:
        return DBAPIError.instance(
            None, None, translated, dbapi_error, connection_invalidated=is_disconnect(exc), dialect=db.dialect
        )
    except Exception as other:
        return other
    return exc


def _discard_after(db: AsyncEngine, pooled: Any, exc: BaseException) -> None:
    """What SQLAlchemy's execute does with a connection after `exc`, for reads that bypass it.

    An error PostgreSQL answered (a bad statement) leaves the connection as good as before. A disconnect
    invalidates every pooled connection, as SQLAlchemy does: after a restart of PostgreSQL all of them are
    dead, and one failed request, not one per pooled connection, should find that out. Anything else
    (a cancel mid-statement, a broken protocol state) discards this connection only.
    """
    if is_disconnect(exc):
        # What Connection._handle_dbapi_exception calls; it invalidates `pooled` too.
        db.sync_engine.pool._invalidate(pooled, exc)
    elif not (type(exc).__module__.startswith("asyncpg") and hasattr(exc, "sqlstate")):
        pooled.invalidate(exc)
