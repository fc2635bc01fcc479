"""The hottest statements, run past SQLAlchemy's execute: the API's reads of one resource by id, the engine's
claim and its batch of outcomes.

SQLAlchemy's execute (building the statement's cache key, execution context, result machinery, a greenlet
switch around the round trip) cost 0.3-0.4 ms of CPU per read on the bench machine, more than the rest of
the request (bench/api.py), and 40 µs per claimed message. These statements are compiled once for each
database and run on the driver connection of a connection checked out of the same pool, and errors are
treated as SQLAlchemy would.

PostgreSQL: on the asyncpg connection, in autocommit (each is one statement; `_discard_after`).

SQLite: on aiosqlite's thread, one call per use (`_on_sqlite`). Through SQLAlchemy each statement cost
several round trips to that thread (cursor, execute, fetch, close, commit, the pool's rollback on return),
each a queue put, a future and a wake-up of the event loop: ~0.23 ms of the loop thread's CPU per read and
~0.7 ms per claim. The transactions stay SQLAlchemy's. Measured with sqlite3's trace callback: the aiosqlite
adapter keeps sqlite3's legacy isolation_level "", so `db.begin()` itself sends nothing, sqlite3 sends a
deferred "BEGIN " before the first UPDATE, then COMMIT (ROLLBACK after an error), and a SELECT runs outside
any transaction. Here a read is one statement outside a transaction, and a change is BEGIN (deferred) …
COMMIT, rolled back in the same call on any error.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.dialects.sqlite import aiosqlite as sqlite_aiosqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.expression import ReturnsRows
from sqlalchemy.util import greenlet_spawn

from mailer.store.outage import is_disconnect

_PG_DIALECT = pg_asyncpg.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
_SQLITE_DIALECT = sqlite_aiosqlite.dialect()

# A statement's SQL and its positional arguments, as sqlite3 takes them.
type SQLiteStep = tuple[str, list[Any]]


class DirectStatement:
    """One statement, compiled once for PostgreSQL and once for SQLite; `json_columns` are decoded as
    SQLAlchemy's JSON type would (asyncpg hands them back as text). On SQLite every value goes through its
    type's own bind and result processors, as SQLAlchemy's execute would pass them (UTCDateTime, JSON)."""

    def __init__(self, statement: Executable, json_columns: tuple[str, ...] = ()) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=_PG_DIALECT)  # type: ignore[attr-defined]
        self.pg_sql = str(compiled)
        # asyncpg takes positional arguments; the statement's own literals (a LIMIT 1) are bound values too.
        self._pg_names: list[str] = list(compiled.positiontup or ())
        self._pg_literals = dict(compiled.params)
        # SQLAlchemy's JSON type decodes these; asyncpg under SQLAlchemy hands them back as text.
        self._json_columns = json_columns
        # sqlite3 takes positional arguments too, each as the type's bind processor makes it.
        sqlite = statement.compile(dialect=_SQLITE_DIALECT)  # type: ignore[attr-defined]
        self.sqlite_sql = str(sqlite)
        literals = sqlite.params
        self._sqlite_binds = [
            (name, literals[name], _bind_processor(sqlite.binds[name].type))
            for name in sqlite.positiontup or ()
        ]
        columns = statement.exported_columns.items() if isinstance(statement, ReturnsRows) else []
        self._sqlite_keys = tuple(key for key, _ in columns)
        self._sqlite_results = [
            (key, process)
            for key, column in columns
            if (process := _result_processor(column.type)) is not None
        ]

    def pg_args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] if name in params else self._pg_literals[name] for name in self._pg_names]

    def decoded(self, record: Any) -> dict[str, Any]:
        row: dict[str, Any] = dict(record.items())
        for name in self._json_columns:
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
        return row

    def sqlite_step(self, params: Mapping[str, Any]) -> SQLiteStep:
        args = []
        for name, literal, process in self._sqlite_binds:
            value = params.get(name, literal)
            args.append(value if process is None else process(value))
        return self.sqlite_sql, args

    def sqlite_row(self, values: Sequence[Any]) -> dict[str, Any]:
        row = dict(zip(self._sqlite_keys, values, strict=True))
        for key, process in self._sqlite_results:
            row[key] = process(row[key])
        return row


def _bind_processor(type_: Any) -> Callable[[Any], Any] | None:
    processor: Callable[[Any], Any] | None = type_.dialect_impl(_SQLITE_DIALECT).bind_processor(
        _SQLITE_DIALECT
    )
    return processor


def _result_processor(type_: Any) -> Callable[[Any], Any] | None:
    # sqlite3 describes no column types: SQLAlchemy asks with None too.
    processor: Callable[[Any], Any] | None = type_.dialect_impl(_SQLITE_DIALECT).result_processor(
        _SQLITE_DIALECT, None
    )
    return processor


async def fetch_one(
    db: AsyncEngine, read: DirectStatement, params: Mapping[str, Any]
) -> Mapping[Any, Any] | None:
    """The one row of a read with `params`, or None (on SQLite outside any transaction)."""
    if db.dialect.name != "postgresql":
        rows = await _on_sqlite(db, _sqlite_read, read.sqlite_step(params))
        return read.sqlite_row(rows[0]) if rows else None
    record = await _on_driver(db, lambda driver: driver.fetchrow(read.pg_sql, *read.pg_args(params)))
    return None if record is None else read.decoded(record)


async def fetch_all(
    db: AsyncEngine, statement: DirectStatement, params: Mapping[str, Any]
) -> list[Mapping[Any, Any]]:
    """Every row a statement returns (a change with RETURNING, too: on SQLite it runs in a transaction)."""
    if db.dialect.name != "postgresql":
        rows = await _on_sqlite(db, _sqlite_transaction, [statement.sqlite_step(params)])
        return [statement.sqlite_row(row) for row in rows]
    records = await _on_driver(db, lambda driver: driver.fetch(statement.pg_sql, *statement.pg_args(params)))
    return [statement.decoded(record) for record in records]


async def execute_in_one_transaction(
    db: AsyncEngine, statements: Sequence[tuple[DirectStatement, Mapping[str, Any]]]
) -> None:
    """SQLite: the statements with their params in one transaction, committed together or not at all, in one
    round trip to aiosqlite's thread."""
    assert db.dialect.name == "sqlite", "one transaction of several statements is written for SQLite"
    await _on_sqlite(
        db, _sqlite_transaction, [statement.sqlite_step(params) for statement, params in statements]
    )


async def _checked_out(db: AsyncEngine) -> Any:
    """A connection checked out of `db`'s pool."""
    dbapi_error = db.dialect.loaded_dbapi.Error
    try:
        return await db.raw_connection()
    except dbapi_error as exc:
        # Wrapped as `db.connect()` raises it (a DBAPIError without a statement: "could not connect"), which
        # the problem middleware answers 503 and the engine's outage handling retries.
        raise DBAPIError.instance(None, None, exc, dbapi_error, dialect=db.dialect) from exc


async def _on_driver[T](db: AsyncEngine, call: Callable[[Any], Awaitable[T]]) -> T:
    """`call` on the asyncpg connection of a connection checked out of `db`'s pool."""
    pooled = await _checked_out(db)
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


async def _on_sqlite[T, A](db: AsyncEngine, work: Callable[[sqlite3.Connection, A], T], arg: A) -> T:
    """`work(connection, arg)` on aiosqlite's thread, on the sqlite3 connection of a connection checked out of
    `db`'s pool: one round trip, whatever `work` does.

    The thread runs its calls in order, so nothing else reaches the connection between `work`'s statements,
    and `work` runs to its end even when the caller is cancelled meanwhile (it cannot be interrupted): a
    change ends in COMMIT or ROLLBACK before the pool's rollback on return or the next user's statements
    run. So on SQLite a cancel leaves no connection in an unknown state, unlike asyncpg's mid-statement
    protocol state (`_discard_after`), and only a disconnect discards it.
    """
    pooled = await _checked_out(db)
    driver = pooled.driver_connection
    assert driver is not None, "a checked-out connection has its driver connection"
    closed = False
    try:
        # aiosqlite's `_execute` queues a function for its thread and awaits it: what its own execute, fetch
        # and commit do, one statement each; it is the only way to run several in one round trip.
        outcome: tuple[T, bool] = await driver._execute(_outside_transaction_after, work, driver, arg)
        result, closed = outcome
        return result
    except Exception as exc:
        error, disconnected = _sqlite_error(db, pooled, exc)
        if disconnected:
            # As SQLAlchemy's execute does after a disconnect ("Cannot operate on a closed database").
            db.sync_engine.pool._invalidate(pooled, exc)
        if error is exc:  # not a DB-API error (an int too large for SQLite): raised as SQLAlchemy lets it
            raise
        raise error from exc
    finally:
        # In a greenlet like every SQLAlchemy pool operation: returning a connection may need I/O. When the
        # thread saw the connection outside any transaction, the pool's rollback on return (one more round
        # trip, 20-40 µs of the loop thread's CPU) is skipped, as SQLAlchemy skips it after a commit;
        # otherwise the pool rolls back, and discards the connection if even that fails.
        if closed:
            await greenlet_spawn(pooled._close_special, True)
        else:
            await greenlet_spawn(pooled.close)


def _outside_transaction_after[T, A](
    work: Callable[[sqlite3.Connection, A], T], driver: Any, arg: A
) -> tuple[T, bool]:
    """On aiosqlite's thread: `work`'s result, and whether the connection is outside any transaction then."""
    connection: sqlite3.Connection = driver._conn
    result = work(connection, arg)
    return result, not connection.in_transaction


def _sqlite_read(connection: sqlite3.Connection, step: SQLiteStep) -> list[Any]:
    """A read's rows. Outside any transaction, as through SQLAlchemy: sqlite3 begins none for a SELECT."""
    sql, args = step
    return connection.execute(sql, args).fetchall()


def _sqlite_transaction(connection: sqlite3.Connection, steps: list[SQLiteStep]) -> list[Any]:
    """The statements in one transaction (BEGIN is deferred, as sqlite3's implicit one), the last one's rows.

    On any error the transaction is rolled back here, in the same call, so that it is never left open on
    the shared connection. BEGIN, COMMIT and ROLLBACK are explicit, not left to sqlite3's implicit
    transactions, so that the atomicity does not hang on the connection's isolation_level.
    """
    connection.execute("BEGIN")
    rows: list[Any] = []
    try:
        for sql, args in steps:
            # fetchall runs each statement to its end: none is left pending at COMMIT.
            rows = connection.execute(sql, args).fetchall()
        connection.execute("COMMIT")
    except BaseException:
        # Some errors (a full disk, an I/O error) make SQLite roll back by itself.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return rows


def _sqlite_error(db: AsyncEngine, pooled: Any, exc: Exception) -> tuple[Exception, bool]:
    """`exc` as SQLAlchemy's execute would raise it (IntegrityError, OperationalError, …), and whether it
    says the connection is gone, as the dialect judges it (then `connection_invalidated` is set)."""
    dbapi_error = db.dialect.loaded_dbapi.Error
    try:
        # The adapter's own translation: sqlite3's errors as they are, aiosqlite's "no active connection"
        # (a ValueError) as an OperationalError.
        pooled.dbapi_connection._handle_exception(exc)
    except dbapi_error as translated:
        disconnected = db.dialect.is_disconnect(translated, pooled.dbapi_connection, None)
        error = DBAPIError.instance(
            None, None, translated, dbapi_error, connection_invalidated=disconnected, dialect=db.dialect
        )
        return error, disconnected
    except Exception as other:
        return other, False
    return exc, False
