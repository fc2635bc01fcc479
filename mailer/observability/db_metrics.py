"""Database pool use, read from SQLAlchemy's queue pool when Prometheus scrapes."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from mailer.observability import metrics


def watch_pool(db: AsyncEngine) -> metrics.Unwatch:
    """Export the pool's size and use until the returned function is called (before `db.dispose()`).

    Only a queue pool has a bounded size to report; any other pool (tests may use NullPool) exports nothing.
    """
    pool = db.pool
    if not isinstance(pool, QueuePool):
        return lambda: None
    # `_max_overflow` has no public accessor; it is fixed at creation, so read it once here.
    max_connections = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    unwatchers = [
        metrics.watch(metrics.DB_POOL_SIZE, lambda: max_connections),
        metrics.watch(metrics.DB_POOL_IN_USE, pool.checkedout),
        metrics.watch(metrics.DB_POOL_IDLE, pool.checkedin),
    ]

    def unwatch() -> None:
        for remove in unwatchers:
            remove()

    return unwatch
