"""API benchmark on PostgreSQL against a real service process: import rate, customer reads, mailout stats.

    .venv/bin/python bench/api.py [--customers 100000] [--messages 1000000] [--clients 32] [--duration-s 10]

Creates a fresh database `mailer_bench_api_<pid>`, starts `.venv/bin/python run.py` on it, measures, stops the
service and drops the database. Results go to stdout as Markdown tables; progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from sqlalchemy import text

if __package__ in (None, ""):  # run as `python bench/api.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DEFAULT_PG_URL,
    BenchDatabase,
    access_token,
    closed_loop,
    customer_lines,
    import_customers,
    load,
    machine,
    note,
    pg_version,
    print_table,
    start_py_spy,
    start_service,
)
from bench.stats_seed import seed_mailout

IMPORT_TARGET_PER_S = 50_000
READS_TARGET_PER_S = 1_500
STATS_P99_TARGET_MS = 50
ZONES = ("UTC", "Europe/Moscow", "Asia/Yekaterinburg", "Asia/Vladivostok")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-url", default=os.environ.get("MAILER_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--customers", type=int, default=100_000, help="customers imported in one request")
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages of the stats mailout")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients for the GET phases")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured time of each GET phase")
    parser.add_argument(
        "--py-spy", type=Path, default=None, help="record the service in each phase to FILE.<phase>"
    )
    parser.add_argument(
        "--single-client-s", type=float, default=5.0, help="measured time of the 1-client stats phase"
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="MAILER_LOG_LEVEL of the service (INFO writes one line per imported customer and per request)",
    )
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured lead-in of each GET phase")
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    info = machine()
    rows: list[tuple[str, str, str]] = []

    spies: list[subprocess.Popen[bytes]] = []

    def spy(pid: int, phase: str, duration_s: float) -> None:
        if args.py_spy is not None:
            out = args.py_spy.with_name(f"{args.py_spy.name}.{phase}")
            spies.append(start_py_spy(pid, out, int(duration_s) + 1))

    connector = aiohttp.TCPConnector(limit=args.clients, limit_per_host=0)
    async with (
        BenchDatabase(args.pg_url, f"mailer_bench_api_{os.getpid()}") as bench_db,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        info["postgresql"] = await pg_version(bench_db.db)
        service = await start_service(
            {"MAILER_DATABASE_URL": bench_db.url, "MAILER_LOG_LEVEL": args.log_level}, session
        )
        try:
            note(f"service pid {service.pid} at {service.base_url}, log {service.log_path}")
            headers = {"Authorization": f"Bearer {await access_token(session, service.base_url)}"}

            # (a) import
            body = customer_lines(args.customers, zones=ZONES)
            note(f"import: {args.customers:,} customers, {len(body) / 1e6:.1f} MB of NDJSON")
            load_before = load()
            spy(service.pid, "import", 15)
            started = time.perf_counter()
            result = await import_customers(session, service.base_url, headers, body)
            elapsed_s = time.perf_counter() - started
            if result["created"] != args.customers or result["failed"]:
                raise RuntimeError(f"import went wrong: {result}")
            rate = args.customers / elapsed_s
            rows += [
                ("import: customers in one request", f"{args.customers:,} in {elapsed_s:.2f} s", ""),
                ("import: rate", f"{rate:,.0f} customers/s", f"≥ {IMPORT_TARGET_PER_S:,}/s"),
                ("import: load before / after", f"{load_before} / {load()}", ""),
            ]
            note(f"import: {rate:,.0f} customers/s")

            # (b) one customer by id
            async with bench_db.db.connect() as conn:
                low, high = (await conn.execute(text("SELECT min(id), max(id) FROM customers"))).one()
            note(f"GET /api/customers/{{id}}: {args.clients} clients, {args.duration_s:g} s")
            load_before = load()
            spy(service.pid, "customers", args.duration_s)
            customers = await closed_loop(
                session,
                lambda rng: f"{service.base_url}/api/customers/{rng.randint(low, high)}",
                headers,
                args.clients,
                args.duration_s,
                args.warmup_s,
                service.pid,
            )
            rows += customers.row("GET /api/customers/{id}", "", f"≥ {READS_TARGET_PER_S:,} req/s")
            rows.append(("GET /api/customers/{id}: load before / after", f"{load_before} / {load()}", ""))

            # (c) statistics of a large mailout, seeded by SQL as finished so that the engine leaves it alone
            note(f"seeding a mailout with {args.messages:,} messages")
            started = time.perf_counter()
            async with bench_db.db.begin() as conn:
                mailout_id = await seed_mailout(conn, args.messages, n_attempts=min(args.messages, 100_000))
                # Same transaction: the service never sees it running.
                await conn.execute(
                    text(
                        "UPDATE mailouts SET status = 'finished', start_at = now() - interval '2 days',"
                        " end_at = now() - interval '1 day', activated_at = now() - interval '2 days',"
                        " finished_at = now() - interval '1 day' WHERE id = :id"
                    ),
                    {"id": mailout_id},
                )
            seed_s = time.perf_counter() - started
            stats_url = f"{service.base_url}/api/mailouts/{mailout_id}/stats"
            async with session.get(stats_url, headers=headers) as response:
                response.raise_for_status()
                stats = await response.json()
            if stats["total"] != args.messages:
                raise RuntimeError(f"the seeded mailout has {stats['total']} messages, not {args.messages}")
            rows.append(("stats: seeding by SQL", f"{args.messages:,} messages in {seed_s:.1f} s", ""))

            # (c') the mailout itself: the other read route of the throughput target
            mailout_url = f"{service.base_url}/api/mailouts/{mailout_id}"
            note(f"GET /api/mailouts/{{id}}: {args.clients} clients, {args.duration_s:g} s")
            spy(service.pid, "mailout", args.duration_s)
            mailout_reads = await closed_loop(
                session,
                lambda _: mailout_url,
                headers,
                args.clients,
                args.duration_s,
                args.warmup_s,
                service.pid,
            )
            rows += mailout_reads.row("GET /api/mailouts/{id}", "", f"≥ {READS_TARGET_PER_S:,} req/s")

            note(f"GET /api/mailouts/{mailout_id}/stats: {args.clients} clients, {args.duration_s:g} s")
            load_before = load()
            spy(service.pid, "stats", args.duration_s)
            stats_result = await closed_loop(
                session,
                lambda _: stats_url,
                headers,
                args.clients,
                args.duration_s,
                args.warmup_s,
                service.pid,
            )
            rows += stats_result.row(
                f"GET /api/mailouts/{{id}}/stats ({args.messages:,} messages)", f"≤ {STATS_P99_TARGET_MS} ms"
            )
            rows.append(("stats: load before / after", f"{load_before} / {load()}", ""))
            # One client: the time of one request without queueing behind 31 others.
            single = await closed_loop(
                session, lambda _: stats_url, headers, 1, args.single_client_s, args.warmup_s, service.pid
            )
            rows += single.row("GET /api/mailouts/{id}/stats, 1 client", "")
            rows.append(("stats, 1 client: load after", load(), ""))
        finally:
            await service.stop()
            for process in spies:
                await asyncio.to_thread(process.wait)

    print_table(
        "machine",
        [(key, value, "") for key, value in info.items()],
    )
    print_table(f"API on PostgreSQL, {args.clients} clients, {args.duration_s:g} s per GET phase", rows)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
