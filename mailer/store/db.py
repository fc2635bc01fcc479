"""Database engines for PostgreSQL (asyncpg) and SQLite (aiosqlite), migrations, and the SQLite lock file."""

from __future__ import annotations

import asyncio
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# How long a SQLite writer waits for another before "database is locked"; long enough to ride out a
# large import batch, short enough that a stuck writer shows up as an error.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Connections of the recorder's own engine (PostgreSQL): it writes one batch at a time.
RECORD_POOL_SIZE = 2


class DatabaseInUseError(RuntimeError):
    """A second process tried to open a SQLite file that one mailer process already owns."""


def async_url(url: str) -> str:
    """Map the contract's `sqlite:///PATH` / `postgresql://…` to the async drivers mailer uses."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An engine with the settings each database needs; no connection is made yet."""
    target = async_url(url)
    if make_url(target).get_backend_name() == "sqlite":
        # One connection: SQLite serialises writers anyway, and one connection means no
        # "database is locked" between our own tasks. Every query is short, none waits on I/O elsewhere.
        engine = create_async_engine(target, pool_size=1, max_overflow=0, pool_timeout=60)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(
        target,
        # Up to twice `pool_size` connections, all kept once opened. With `pool_size` kept and as many
        # overflow, an overflow connection was closed whenever it came back to a full pool, and under a
        # fluctuating load (32 API clients) opening connections again (TCP, TLS negotiation, startup) was
        # 14 % of the CPU per request. The same bound on connections, without the churn.
        pool_size=2 * pool_size,
        max_overflow=0,
        # No pre-ping (a round trip on every checkout, 7 % of the sending CPU): a restarted PostgreSQL
        # leaves dead connections in the pool, and the first statement that meets one fails as a disconnect;
        # SQLAlchemy then invalidates every pooled connection at once, and the caller rides it out (the
        # engine retries, `mailer/store/outage.py`; the API answers 503 with Retry-After).
        pool_recycle=1800,
    )


def create_record_engine(url: str) -> AsyncEngine | None:
    """PostgreSQL: the engine the recorder writes outcomes with, or None on SQLite (one connection anyway).

    Autocommit, so that a batch is one statement and one round trip, and `synchronous_commit = off` for its
    sessions only: the senders' throughput must not follow the disk's fsync latency, and an outcome lost in a
    crash of PostgreSQL itself only means its message is leased again and re-sent (docs/reliability.md).
    Customers, mailouts and claims keep committing durably on the main engine.
    """
    target = async_url(url)
    if make_url(target).get_backend_name() == "sqlite":
        return None
    return create_async_engine(
        target,
        # One recorder, one batch at a time; the second is for the per-outcome retry after a failed batch.
        pool_size=RECORD_POOL_SIZE,
        max_overflow=0,
        pool_recycle=1800,
        isolation_level="AUTOCOMMIT",
        connect_args={"server_settings": {"synchronous_commit": "off"}},
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL + NORMAL is durable against process crashes; only an OS crash may lose the last commits.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = async_url(url)
    return config


def migrate_sync(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (alembic runs its own event loop, so call it
    off-loop)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(url), revision)


async def migrate(url: str) -> None:
    await asyncio.to_thread(migrate_sync, url)


@dataclass
class SQLiteLock:
    """An exclusive `flock` on `<db>.lock`, held for the life of the process: one process per SQLite file."""

    path: Path
    _fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUseError(
                f"another mailer process is using the SQLite database {self.path.with_suffix('')}; "
                "SQLite serves one process only (use PostgreSQL to run several)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def sqlite_lock_for(url: str) -> SQLiteLock | None:
    path = sqlite_path(url)
    return None if path is None else SQLiteLock(path.with_name(path.name + ".lock"))
