"""The engine's own CPU per message, without HTTP and without a database (issue 9).

    .venv/bin/python bench/engine.py [--messages 100000] [--concurrency 64] [--rounds 3] [--log-level INFO]

The real sender pool, attempter and recorder, as `mailer serve` wires them, with the journey lines written at
`--log-level` to a file in a temporary directory, and the heap frozen as `serve` does; the provider answers
200 on the next turn of the event loop and the recorder's write only yields. One task submits the messages
of one running mailout (no window) one by one, then the pool drains. What is timed is this process's CPU time
over the whole run: the workers, the attempts' checks, the outcomes, the metrics, the log lines, the queues
and slots between them. The dispatch benchmark's service CPU per message is this plus the aiohttp client
(about 0.11 ms per request here) and the database's client side. Results: a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import uvloop

if __package__ in (None, ""):  # run as `python bench/engine.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load, note, print_table
from mailer.domain.breaker import CircuitBreaker
from mailer.domain.clock import utc_now
from mailer.domain.retry import RetryPolicy
from mailer.domain.sending import ClaimedMessage, MailoutPlan, MessageOutcome
from mailer.domain.statuses import MailoutStatus, Outcome
from mailer.engine.attempt import SenderConfig
from mailer.engine.jobs import SendJob
from mailer.engine.recorder import Recorder
from mailer.engine.sender import SenderPool
from mailer.gc_tuning import freeze_startup_heap
from mailer.observability.logging import configure_logging
from mailer.provider.client import SendResult
from mailer.settings import Settings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000, help="messages per round")
    parser.add_argument("--concurrency", type=int, default=64, help="sender workers")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with a fresh pool")
    parser.add_argument("--log-level", default="INFO", help="level of the journey lines (INFO: all written)")
    return parser.parse_args()


class InstantProvider:
    """Answers every send with 200 OK on the next turn of the event loop (an I/O completion, not a call)."""

    def url_for(self, msg_id: int) -> str:
        return f"http://provider.invalid/send/{msg_id}"

    async def send(self, msg_id: int, phone: str, text: str, timeout_s: float) -> SendResult:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        loop.call_soon(answered.set_result, None)
        await answered
        return SendResult(Outcome.SENT, 200, 0.001, None, None)


async def write_nothing(_outcomes: Sequence[MessageOutcome], _now: datetime) -> None:
    await asyncio.sleep(0)


async def one_round(messages: int, concurrency: int) -> float:
    """CPU seconds of one round: `messages` sent and recorded by a fresh pool."""
    recorder = Recorder(write_nothing, utc_now)
    config = SenderConfig(
        concurrency=concurrency,
        timeout_s=5.0,
        rate_per_s=0.0,
        retry=RetryPolicy(0.01, 0.1, 3),
        breaker_cooldown_s=1.0,
        auth_probe_interval_s=1.0,
    )
    breaker = CircuitBreaker(1000, 1.0, 10, 1.0, time.monotonic)
    pool = SenderPool(
        InstantProvider(),
        recorder,
        breaker,
        config,
        on_auth_pause=lambda _: None,
        on_auth_resume=lambda: None,
    )
    now = utc_now()
    plan = MailoutPlan(
        1,
        MailoutStatus.RUNNING,
        now - timedelta(hours=1),
        now + timedelta(hours=1),
        "hello",
        None,
        (),
        (),
        now,
    )
    live = pool.open(plan)
    tasks = [asyncio.create_task(recorder.run())]
    tasks += [asyncio.create_task(pool.run_worker()) for _ in range(concurrency)]
    claimed = [ClaimedMessage(i, 1, f"7900{i:07d}", "UTC", 0, i) for i in range(1, messages + 1)]
    started = time.process_time()
    for message in claimed:
        await pool.submit(SendJob(message, live))
    await pool.drain(10.0)
    await recorder.flush()
    cpu_s = time.process_time() - started
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    return cpu_s


async def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rows = []
    for n in range(1, args.rounds + 1):
        cpu_s = await one_round(args.messages, args.concurrency)
        per_message_us = cpu_s / args.messages * 1e6
        note(f"round {n}: {per_message_us:.1f} µs of CPU per message")
        rows.append(
            (f"round {n}: CPU per message ({args.messages:,} messages)", f"{per_message_us:.1f} µs", "")
        )
    return rows


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mailer-bench-engine-") as scratch:
        log_file = Path(scratch) / "journey.log"
        settings = Settings(database_url=f"sqlite:///{Path(scratch) / 'unused.db'}", log_level=args.log_level)
        with log_file.open("w") as stream:
            configure_logging(settings, stream=stream)
            freeze_startup_heap()
            load_before = load()
            rows = uvloop.run(run(args))
            rows.append(
                ("log per message", f"{log_file.stat().st_size / args.rounds / args.messages:.0f} bytes", "")
            )
            rows.append(("load before / after", f"{load_before} / {load()}", ""))
    print_table(f"Engine without HTTP or database, MAILER_LOG_LEVEL={args.log_level} (bench/engine.py)", rows)


if __name__ == "__main__":
    main()
