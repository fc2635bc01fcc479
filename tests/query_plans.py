"""The database's plan for the real queries code sends: caught as sent, explained with their parameters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


async def plans_of(
    db: AsyncEngine, run: Callable[[], Awaitable[Any]], wanted: Callable[[str], bool]
) -> list[str]:
    """The plan of every statement `run` sends that `wanted` picks, as one text per statement."""
    sent: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if wanted(statement):
            sent.append((statement, parameters))

    event.listen(db.sync_engine, "before_cursor_execute", catch)
    try:
        await run()
    finally:
        event.remove(db.sync_engine, "before_cursor_execute", catch)
    plans = []
    async with db.connect() as conn:
        explain = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
        for statement, parameters in sent:
            result = await conn.exec_driver_sql(explain + statement, parameters)
            plans.append("\n".join(" ".join(str(cell) for cell in row) for row in result.all()))
    return plans
