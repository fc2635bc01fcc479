"""Time per outcome of the recorder's batch write on a SQLite file (issue 9); no server, no provider.

    .venv/bin/python bench/record.py [--messages 20000] [--batch 500] [--rounds 3]

Each round seeds one running mailout with `--messages` messages in `sending` (raw SQL: the counter triggers
count them as for any writer), then records them all through `DispatchStore.record` in batches of `--batch`,
one at a time as the recorder does. The outcomes are mixed as in a dispatch with retries: one in ten back to
`pending` with a due time and an error, one in fifty `failed` with an error, the rest `sent`; every one with
its attempt. Only the `record` calls are timed: wall time, and the process's CPU time (aiosqlite's worker
thread, where SQLite itself runs, included). Results are a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

if __package__ in (None, ""):  # run as `python bench/record.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load, note, print_table
from mailer.domain.sending import AttemptRow, MessageOutcome
from mailer.domain.statuses import MessageStatus
from mailer.store.db import create_engine, migrate
from mailer.store.dispatch import DispatchStore

_NEW_MAILOUT = text(
    "INSERT INTO mailouts (start_at, end_at, text, operator_codes, tags, status, created_at, updated_at)"
    " VALUES (:now, :end, 'benchmark', '[]', '[]', 'running', :now, :now) RETURNING id"
)

# customer_id stays NULL: the (mailout_id, customer_id) uniqueness allows any number of NULLs.
_SENDING_MESSAGES = text(
    """
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n)
    INSERT INTO messages (mailout_id, customer_id, phone, timezone, status, attempts, lease_until,
                          created_at, updated_at)
    SELECT :mailout_id, NULL, printf('7%010d', i), 'UTC', 'sending', 0, :lease, :now, :now FROM n
    """
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages recorded per round")
    parser.add_argument("--batch", type=int, default=500, help="outcomes per record call")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on a fresh mailout")
    return parser.parse_args()


def outcome_for(message_id: int, mailout_id: int, now: datetime) -> MessageOutcome:
    """The i-th outcome of the mix: one in ten retried, one in fifty failed, the rest sent."""
    if message_id % 10 == 0:
        attempt = AttemptRow(now, 31.25, "transient", 503, "HTTP 503")
        retry_at = now + timedelta(seconds=4)
        return MessageOutcome(
            message_id, mailout_id, MessageStatus.PENDING, retry_at, None, "HTTP 503", attempt, 1
        )
    if message_id % 50 == 1:
        attempt = AttemptRow(now, 12.5, "rejected", 400, "HTTP 400: bad phone")
        return MessageOutcome(
            message_id, mailout_id, MessageStatus.FAILED, None, None, "HTTP 400: bad phone", attempt, 1
        )
    attempt = AttemptRow(now, 8.75, "sent", 200, None)
    return MessageOutcome(message_id, mailout_id, MessageStatus.SENT, None, now, None, attempt, 1)


async def one_round(store: DispatchStore, messages: int, batch: int) -> tuple[float, float]:
    """Seed a mailout of `messages` in `sending` and record them all; (wall s, CPU s) of the writes."""
    now = datetime.now(UTC)
    async with store._db.begin() as conn:
        mailout_id = (
            await conn.execute(_NEW_MAILOUT, {"now": now, "end": now + timedelta(days=1)})
        ).scalar_one()
        await conn.execute(
            _SENDING_MESSAGES,
            {"n": messages, "mailout_id": mailout_id, "lease": now + timedelta(minutes=5), "now": now},
        )
        ids = list(
            (
                await conn.execute(
                    text("SELECT id FROM messages WHERE mailout_id = :m ORDER BY id"), {"m": mailout_id}
                )
            ).scalars()
        )
    outcomes = [outcome_for(message_id, mailout_id, now) for message_id in ids]
    wall_s = cpu_s = 0.0
    for start in range(0, len(outcomes), batch):
        chunk = outcomes[start : start + batch]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await store.record(chunk, datetime.now(UTC))
        wall_s += time.perf_counter() - wall0
        cpu_s += time.process_time() - cpu0
    async with store._db.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT count(*) FROM messages WHERE mailout_id = :m AND status = 'sending'"),
                {"m": mailout_id},
            )
        ).scalar_one()
    if left:
        raise SystemExit(f"{left} messages were left in sending: the write is broken")
    return wall_s, cpu_s


async def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-record-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'mailer.db'}"
        await migrate(url)  # alembic runs its own loop: in a thread
        engine = create_engine(url)
        store = DispatchStore(engine)
        rows: list[tuple[str, str, str]] = []
        load_before = load()
        try:
            for n in range(1, args.rounds + 1):
                wall_s, cpu_s = await one_round(store, args.messages, args.batch)
                per_wall = wall_s / args.messages * 1e6
                per_cpu = cpu_s / args.messages * 1e6
                batch_ms = args.batch / 1000  # µs per outcome to ms per batch
                note(f"round {n}: {per_wall:.1f} µs wall, {per_cpu:.1f} µs CPU per outcome")
                rows.append(
                    (
                        f"round {n}: wall / CPU per outcome ({args.messages:,} in batches of {args.batch})",
                        f"{per_wall:.1f} / {per_cpu:.1f} µs"
                        f" ({per_wall * batch_ms:.1f} / {per_cpu * batch_ms:.1f} ms a batch)",
                        "",
                    )
                )
        finally:
            await engine.dispose()
    rows.append(("load before / after", f"{load_before} / {load()}", ""))
    print_table("Outcome batch write, SQLite (bench/record.py)", rows)


if __name__ == "__main__":
    asyncio.run(main())
