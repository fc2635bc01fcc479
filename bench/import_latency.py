"""/healthz latency while the service does its heaviest single requests, on the embedded default (SQLite).

    .venv/bin/python bench/import_latency.py [--good 100000] [--bad 1000000] [--messages 100000]

A probe sends GET /healthz one after another (a 5 ms pause between two) on its own connection, as a
liveness probe would, while the service
(a) imports `--good` valid customers as NDJSON,
(b) imports `--bad` CSV lines that are all refused (about 6 MB for 1,000,000),
(c) deletes a mailout with `--messages` messages (its window is closed, so nothing is sent); a second probe
    creates one customer after another meanwhile, to show how long a writer waits for SQLite's lock.
For each: the request's own duration, and the probe's p50, p99 and max. Target (issue 13): p99 <= 50 ms.
The service is a real process (`run.py`) on a fresh SQLite file; results are Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as `python bench/import_latency.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    LatencyResult,
    access_token,
    customer_lines,
    import_customers,
    machine,
    note,
    poll,
    print_table,
    start_service,
)

HEALTH_TARGET = "p99 <= 50 ms"
# Pause between two probes: often enough to catch any stall of a few milliseconds, light enough not to load.
PROBE_PAUSE_S = 0.005
ACTIVATION_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 1800.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--good", type=int, default=100_000, help="valid NDJSON lines to import")
    parser.add_argument("--bad", type=int, default=1_000_000, help="refused CSV lines to import")
    parser.add_argument("--messages", type=int, default=100_000, help="messages of the deleted mailout")
    return parser.parse_args()


async def probe(call: Callable[[], Awaitable[None]], stop: asyncio.Event, result: LatencyResult) -> None:
    started = time.perf_counter()
    while not stop.is_set():
        begin = time.perf_counter()
        try:
            await call()
        except (aiohttp.ClientError, TimeoutError):
            result.errors += 1
        else:
            result.latencies_s.append(time.perf_counter() - begin)
        await asyncio.sleep(PROBE_PAUSE_S)  # the probe's period, not synchronisation
    result.elapsed_s = time.perf_counter() - started


async def while_probed[T](
    work: Awaitable[T], probes: dict[str, Callable[[], Awaitable[None]]]
) -> tuple[T, float, dict[str, LatencyResult]]:
    """Run `work` with each probe looping beside it; its result, its duration and the probes' latencies."""
    stop = asyncio.Event()
    results = {name: LatencyResult() for name in probes}
    tasks = [asyncio.create_task(probe(call, stop, results[name])) for name, call in probes.items()]
    started = time.perf_counter()
    try:
        value = await work
    finally:
        duration_s = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
    return value, duration_s, results


def bad_csv(lines: int) -> bytes:
    # Five bytes and a newline a line, every one refused (not a phone): the 6 MB for a million.
    return b"phone\n" + b"bad-1\n" * lines


async def run(args: argparse.Namespace) -> None:
    for key, value in machine().items():
        note(f"{key}: {value}")
    with tempfile.TemporaryDirectory(prefix="mailer-bench-import-") as tmp:
        env = {"MAILER_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}"}
        # Two sessions: the health probe has its own connection, as a kubelet's would.
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            aiohttp.ClientSession(timeout=timeout) as probe_session,
        ):
            service = await start_service(env, session)
            try:
                await measure(args, service.base_url, session, probe_session)
            finally:
                await service.stop()


async def measure(
    args: argparse.Namespace,
    base_url: str,
    session: aiohttp.ClientSession,
    probe_session: aiohttp.ClientSession,
) -> None:
    headers = {"Authorization": f"Bearer {await access_token(session, base_url)}"}

    async def healthz() -> None:
        async with probe_session.get(base_url + "/healthz") as response:
            response.raise_for_status()
            await response.read()

    created = 0

    async def create_customer() -> None:
        nonlocal created
        phone = f"78{created:09d}"
        created += 1
        async with probe_session.post(
            base_url + "/api/customers/", json={"phone": phone}, headers=headers
        ) as response:
            response.raise_for_status()
            await response.read()

    rows: list[tuple[str, str, str]] = []

    note(f"(a) importing {args.good:,} good NDJSON lines")
    body = customer_lines(args.good)
    good, good_s, probes = await while_probed(
        import_customers(session, base_url, headers, body), {"healthz": healthz}
    )
    rows += [("(a) good import: lines, duration", f"{good['lines']:,}, {good_s:.2f} s", "")]
    rows += probes["healthz"].row("(a) /healthz", HEALTH_TARGET)

    note(f"(b) importing {args.bad:,} bad CSV lines")
    body = bad_csv(args.bad)
    bad, bad_s, probes = await while_probed(
        csv_import(session, base_url, headers, body), {"healthz": healthz}
    )
    rows += [
        (
            "(b) bad import: size, failed, listed errors, duration",
            f"{len(body) / 1e6:.1f} MB, {bad['failed']:,}, {len(bad['errors']):,}, {bad_s:.2f} s",
            "",
        )
    ]
    rows += probes["healthz"].row("(b) /healthz", HEALTH_TARGET)

    note(f"(c) a mailout of {args.messages:,} messages with a closed window, then its delete")
    if args.messages > args.good:
        await import_customers(
            session, base_url, headers, customer_lines(args.messages - args.good, args.good)
        )
    mailout_id = await closed_window_mailout(session, base_url, headers)
    await poll(
        lambda: has_messages(session, base_url, headers, mailout_id, args.messages), 0.2, ACTIVATION_TIMEOUT_S
    )
    _, delete_s, probes = await while_probed(
        delete(session, base_url, headers, mailout_id), {"healthz": healthz, "writer": create_customer}
    )
    rows += [("(c) delete: messages, duration", f"{args.messages:,}, {delete_s:.2f} s", "")]
    rows += probes["healthz"].row("(c) /healthz", HEALTH_TARGET)
    rows += probes["writer"].row("(c) POST /api/customers/ meanwhile", "max well under 1 s")

    print_table("/healthz while importing and deleting (SQLite)", rows)


async def csv_import(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    async with session.post(
        base_url + "/api/customers/import", data=body, headers={**headers, "Content-Type": "text/csv"}
    ) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
    return result


async def closed_window_mailout(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str]
) -> int:
    """A mailout to every customer (all in UTC) that starts now, with a window a few hours away."""
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=3)).strftime("%H:00")
    closes = (now + timedelta(hours=4)).strftime("%H:00")
    body = {
        "start_at": now.isoformat(),
        "end_at": (now + timedelta(days=1)).isoformat(),
        "text": "bench: never sent",
        "filter": {"operator_codes": [], "tags": []},
        "send_window": {"start": opens, "end": closes},
    }
    async with session.post(base_url + "/api/mailouts/", json=body, headers=headers) as response:
        response.raise_for_status()
        return int((await response.json())["id"])


async def has_messages(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], mailout_id: int, total: int
) -> bool:
    async with session.get(f"{base_url}/api/mailouts/{mailout_id}/stats", headers=headers) as response:
        response.raise_for_status()
        return int((await response.json())["total"]) >= total


async def delete(
    session: aiohttp.ClientSession, base_url: str, headers: dict[str, str], mailout_id: int
) -> None:
    async with session.delete(f"{base_url}/api/mailouts/{mailout_id}", headers=headers) as response:
        response.raise_for_status()


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
