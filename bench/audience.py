"""`POST /api/audience/count`'s query at 1,000,000 customers, on PostgreSQL and SQLite.

    .venv/bin/python bench/audience.py [--customers 1000000] [--runs 15] [--skip-sqlite] [--skip-postgres]

Seeds the customers by SQL alone (20 operator codes, 10 tags, 12 time zones, spread evenly) into a fresh,
migrated database, then times the audience count (the store's one grouped query plus the per-zone window
check of `mailer.operations.audience`) for typical filters: median and max of `--runs` runs after one warm-up.
Results are a Markdown table on stdout. PostgreSQL: MAILER_TEST_PG_URL (default postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

if __package__ in (None, ""):  # run as `python bench/audience.py`: make `bench` and `mailer` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BenchDatabase, machine, note
from mailer.domain.mailouts import AudienceFilter
from mailer.domain.windows import SendWindow
from mailer.operations.audience import count
from mailer.store.db import create_engine, migrate

PG_ADMIN_URL = os.environ.get("MAILER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ZONES = (
    "UTC",
    "Europe/Moscow",
    "Europe/London",
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "America/New_York",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Asia/Vladivostok",
    "Asia/Yekaterinburg",
    "Europe/Kaliningrad",
    "Asia/Kolkata",
)
CODES = 20  # operator codes 900..919
TAGS = 10  # tags t0..t9

_ZONE_ARRAY = "ARRAY[" + ", ".join(f"'{z}'" for z in ZONES) + "]"
PG_SEED = f"""
INSERT INTO customers (phone, operator_code, tag, timezone, created_at, updated_at)
SELECT '7' || lpad(i::text, 10, '0'), (900 + i % {CODES})::text, 't' || (i % {TAGS}),
       ({_ZONE_ARRAY})[i % {len(ZONES)} + 1], now(), now()
FROM generate_series(1, :n) AS i
"""
_ZONE_CASE = " ".join(f"WHEN {i} THEN '{z}'" for i, z in enumerate(ZONES))
SQLITE_SEED = f"""
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < :n)
INSERT INTO customers (phone, operator_code, tag, timezone, created_at, updated_at)
SELECT '7' || printf('%010d', i), CAST(900 + i % {CODES} AS TEXT), 't' || (i % {TAGS}),
       CASE i % {len(ZONES)} {_ZONE_CASE} END, datetime('now'), datetime('now')
FROM seq
"""

CASES: tuple[tuple[str, AudienceFilter, SendWindow | None], ...] = (
    ("everyone, no window", AudienceFilter(), None),
    ("everyone, 09:00-21:00", AudienceFilter(), SendWindow.parse("09:00", "21:00")),
    ("1 operator code", AudienceFilter(operator_codes=("905",)), SendWindow.parse("09:00", "21:00")),
    ("3 codes and 2 tags", AudienceFilter(("901", "902", "903"), ("t1", "t2")), None),
    ("1 tag", AudienceFilter(tags=("t3",)), SendWindow.parse("22:00", "06:00")),
)


async def measure(url: str, seed_sql: str, n: int, runs: int, label: str) -> list[tuple[str, str, str]]:
    await migrate(url)
    db = create_engine(url, 2)
    try:
        started = time.perf_counter()
        async with db.begin() as conn:
            await conn.execute(text(seed_sql), {"n": n})
            if conn.dialect.name == "postgresql":
                await conn.execute(text("ANALYZE customers"))
            else:
                await conn.execute(text("ANALYZE"))
        note(f"{label}: seeded {n:,} customers in {time.perf_counter() - started:.1f} s")
        read_db = db.execution_options(isolation_level="AUTOCOMMIT")
        rows = []
        for name, audience, window in CASES:
            await count(read_db, audience, window)  # warm-up: plan cache, pages in memory
            times_ms = []
            for _ in range(runs):
                t0 = time.perf_counter()
                result = await count(read_db, audience, window)
                times_ms.append((time.perf_counter() - t0) * 1000)
            rows.append(
                (
                    f"{label}: {name}",
                    f"{result.count:,} / {result.in_window_now:,}",
                    f"{statistics.median(times_ms):.0f} ms (max {max(times_ms):.0f})",
                )
            )
        return rows
    finally:
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    if not args.skip_postgres:
        async with BenchDatabase(PG_ADMIN_URL, "mailer_bench_audience") as database:
            rows += await measure(database.url, PG_SEED, args.customers, args.runs, "PostgreSQL")
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/audience.db"
            rows += await measure(url, SQLITE_SEED, args.customers, args.runs, "SQLite")
    print(f"machine: {machine()}")
    print(f"\n### Audience count at {args.customers:,} customers (median of {args.runs} runs)\n")
    print("| database: filter, window | count / in window now | time |")
    print("| --- | --- | --- |")
    for case, counts, took in rows:
        print(f"| {case} | {counts} | {took} |")


if __name__ == "__main__":
    asyncio.run(main())
