"""Admin tabs benchmark: does a dashboard open in ten tabs cost the sender anything measurable (issue 8)?

    .venv/bin/python bench/admin_tabs.py [--customers 60000] [--runs 3] [--tabs 10] [--quick]
        [--interval-s 3.0] [--fast-interval-s 0.3] [--concurrency 64] [--log-level INFO] [--pg-url URL]

One service (run.py) on a fresh PostgreSQL database `mailer_bench_admin_tabs_<pid>` with the standalone
sandbox (no latency) as its provider, `--customers` customers imported once. Then, `--runs` times in turn
(a, b, c, a, b, c, …: the machine is shared and its load drifts, so each case sees the same drift):

(a) a mailout to every customer, starting now, with no dashboard open;
(b) the same with `--tabs` simulated tabs: each a signed-in aiohttp session (the local sign-in form, its CSRF
    token and cookie) that loads the dashboard page and the running mailout's page once, then polls their
    live fragments (the `data-refresh-url` of each page) as mailer/admin/static/admin.js does: the same
    headers, the next request `--interval-s` (the UI's 3 s) after the previous answer, stopping when a
    fragment answers `data-live="false"`;
(c) as (b), polling `--fast-interval-s` (ten times faster), so that a cost shows if there is one.

Each run is timed from the create request until no message is pending or sending, with the service's CPU
time (user + system, /proc) over the same span: send rate and service CPU per message, as bench/dispatch.py
measures them. The CPU of the PostgreSQL backends serving the bench database is summed over the same span
too (the fragments' queries run there). The tabs' fragment latencies are measured at the client. The tabs
run in this process, on the same 2 cores as the service: a real browser would not, so (b) and (c) are, if
anything, pessimistic. Results: Markdown tables on stdout; progress on stderr. `--quick`: tiny sizes, one
run of each case (a smoke run: the figures mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if __package__ in (None, ""):  # run as `python bench/admin_tabs.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    DEFAULT_PG_URL,
    Api,
    BenchDatabase,
    Process,
    access_token,
    cpu_seconds,
    customer_lines,
    import_customers,
    load,
    machine,
    note,
    percentile,
    pg_version,
    poll,
    start_sandbox,
    start_service,
)

# At about 2,000 msg/s here a run lasts some 30 s: ten beats of the UI's 3 s, so that (b) is mostly polling
# rather than the two page loads each tab starts with.
DEFAULT_CUSTOMERS = 60_000
SANDBOX_TOKEN = "bench-provider-token"
TEXT = "Benchmark: the dashboard is open in ten tabs"
# admin.js: REFRESH_MS and FETCH_HEADERS.
UI_INTERVAL_S = 3.0
FETCH_HEADERS = {"X-Requested-With": "fetch", "Accept": "text/html-fragment"}
PAGE_HEADERS = {"Accept": "text/html"}
FAST_FACTOR = 10
# Ten sign-ins plus the API token within a minute would trip the default per-address login limit (10/min).
LOGIN_ATTEMPTS_PER_MINUTE = 1000
# Bounds: one run's mailout must be final within this, one request answered within that.
RUN_TIMEOUT_S = 600.0
REQUEST_TIMEOUT_S = 30.0
FINISH_POLL_S = 0.2
# After a mailout's messages are all final, its status turns `finished` on the engine's next beat.
SETTLE_TIMEOUT_S = 60.0

REFRESH_URL = re.compile(r'data-refresh-url="([^"]+)"')
LIVE_FALSE = re.compile(r'data-live="false"')
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]*)"')

QUICK = {"customers": 1000, "runs": 1}


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    tabs: int
    interval_s: float | None  # None: no tab open


@dataclass
class RunResult:
    case: Case
    messages: int
    sent: int
    seconds: float
    service_cpu_s: float
    pg_cpu_s: float
    load_before: str
    load_after: str
    pages: int = 0
    fragments: int = 0
    fragment_errors: int = 0
    latencies_s: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg-url", default=os.environ.get("MAILER_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument(
        "--customers", type=int, default=DEFAULT_CUSTOMERS, help="audience of every run's mailout"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each case, alternating")
    parser.add_argument("--tabs", type=int, default=10, help="simulated tabs in (b) and (c)")
    parser.add_argument("--interval-s", type=float, default=UI_INTERVAL_S, help="(b): the UI's own interval")
    parser.add_argument(
        "--fast-interval-s", type=float, default=UI_INTERVAL_S / FAST_FACTOR, help="(c): ten times faster"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="MAILER_SEND_CONCURRENCY")
    parser.add_argument("--log-level", default="INFO", help="MAILER_LOG_LEVEL (INFO: every journey line)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.customers < 1 or args.runs < 1 or args.tabs < 1:
        parser.error("--customers, --runs and --tabs must be at least 1")
    if args.interval_s <= 0 or args.fast_interval_s <= 0:
        parser.error("the intervals must be positive")
    return args


def cases(args: argparse.Namespace) -> list[Case]:
    return [
        Case("a", "(a) no dashboard open", 0, None),
        Case(
            "b",
            f"(b) {args.tabs} tabs, every {args.interval_s:g} s (the UI's interval)",
            args.tabs,
            args.interval_s,
        ),
        Case("c", f"(c) {args.tabs} tabs, every {args.fast_interval_s:g} s", args.tabs, args.fast_interval_s),
    ]


# --- the service's API --------------------------------------------------------------------------------------


# --- PostgreSQL's share -------------------------------------------------------------------------------------


async def backend_cpu(db: AsyncEngine, name: str) -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL backend connected to database `name` (but this one)."""
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"),
            {"name": name},
        )
        pids = [int(pid) for (pid,) in rows]
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = cpu_seconds(pid)
        except OSError:  # gone meanwhile, or PostgreSQL is not on this machine
            continue
    return seconds


def backend_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A backend that started during the run counts from zero; one that ended during it is lost (the
    # service's pool keeps its connections, so that is rare).
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# --- the tabs -----------------------------------------------------------------------------------------------


@dataclass
class TabCounts:
    pages: int = 0
    fragments: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)


class Tab:
    """One signed-in browser tab: its own cookie jar, the pages it loaded, the fragments it polls."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        # The service listens on 127.0.0.1: aiohttp keeps cookies of an IP address only when `unsafe`.
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def close(self) -> None:
        await self.session.close()

    async def sign_in(self) -> None:
        """The local sign-in form, as a person would: GET it for the CSRF token, POST it back."""
        async with self.session.get(self.base_url + "/admin/login", headers=PAGE_HEADERS) as response:
            response.raise_for_status()
            match = CSRF_INPUT.search(await response.text())
        if match is None:
            raise RuntimeError("no csrf_token field on /admin/login")
        form = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD, "csrf_token": match.group(1)}
        async with self.session.post(
            self.base_url + "/admin/login", data=form, allow_redirects=False
        ) as response:
            if response.status != 303:
                raise RuntimeError(f"sign-in refused: {response.status} {await response.text()}")

    async def load_page(self, path: str, counts: TabCounts) -> str:
        """A full page; returns its live fragment's URL."""
        async with self.session.get(self.base_url + path, headers=PAGE_HEADERS) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
        counts.pages += 1
        match = REFRESH_URL.search(body)
        if match is None:
            raise RuntimeError(f"GET {path}: no data-refresh-url on the page")
        return match.group(1)

    async def poll_fragment(
        self, url: str, interval_s: float, counts: TabCounts, stop: asyncio.Event
    ) -> None:
        """admin.js's watch(): wait, fetch, swap; again until the fragment says nothing is live."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
                return  # the run is over
            except TimeoutError:
                pass
            started = time.perf_counter()
            try:
                async with self.session.get(self.base_url + url, headers=FETCH_HEADERS) as response:
                    body = await response.text()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                counts.errors += 1  # admin.js tries again at the next beat
                continue
            if not ok:
                counts.errors += 1
                continue
            counts.latencies_s.append(time.perf_counter() - started)
            counts.fragments += 1
            if LIVE_FALSE.search(body):
                return

    async def watch(self, mailout_id: int, interval_s: float, counts: TabCounts, stop: asyncio.Event) -> None:
        """Open the dashboard and the running mailout's page, then poll both pages' live fragments."""
        urls = [
            await self.load_page("/admin/", counts),
            await self.load_page(f"/admin/mailouts/{mailout_id}", counts),
        ]
        async with asyncio.TaskGroup() as group:
            for url in urls:
                group.create_task(self.poll_fragment(url, interval_s, counts, stop), name=f"tab-poll {url}")


# --- one run ------------------------------------------------------------------------------------------------


async def one_run(
    case: Case,
    api: Api,
    service: Process,
    bench_db: BenchDatabase,
    tabs: Sequence[Tab],
    n: int,
) -> RunResult:
    counts = TabCounts()
    stop = asyncio.Event()
    load_before = load()
    pg_before = await backend_cpu(bench_db.db, bench_db.name)
    cpu_before = cpu_seconds(service.pid)
    started = time.perf_counter()
    mailout_id = await api.create_mailout(TEXT)
    watchers: list[asyncio.Task[None]] = []
    if case.interval_s is not None:
        watchers = [
            asyncio.create_task(tab.watch(mailout_id, case.interval_s, counts, stop), name=f"tab {i}")
            for i, tab in enumerate(tabs[: case.tabs])
        ]

    async def all_final() -> bool:
        for watcher in watchers:  # a tab that failed fails the run now, not at the end
            if watcher.done() and watcher.exception() is not None:
                raise RuntimeError("a tab failed") from watcher.exception()
        stats = await api.stats(mailout_id)
        by_status: dict[str, int] = stats["by_status"]
        return bool(stats["total"] == n and by_status["pending"] + by_status["sending"] == 0)

    try:
        await poll(all_final, FINISH_POLL_S, RUN_TIMEOUT_S)
        seconds = time.perf_counter() - started
        service_cpu_s = cpu_seconds(service.pid) - cpu_before
        pg_cpu_s = backend_delta(pg_before, await backend_cpu(bench_db.db, bench_db.name))
        load_after = load()
    finally:
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
    for watcher in watchers:
        if (error := watcher.exception()) is not None:
            raise RuntimeError(f"{case.key}: a tab failed") from error
    stats = await api.stats(mailout_id)

    async def finished() -> bool:
        return await api.status(mailout_id) == "finished"

    # The next run starts from a quiet service: this mailout's actor gone, no tab left polling.
    await poll(finished, FINISH_POLL_S, SETTLE_TIMEOUT_S)
    return RunResult(
        case=case,
        messages=n,
        sent=int(stats["by_status"]["sent"]),
        seconds=seconds,
        service_cpu_s=service_cpu_s,
        pg_cpu_s=pg_cpu_s,
        load_before=load_before,
        load_after=load_after,
        pages=counts.pages,
        fragments=counts.fragments,
        fragment_errors=counts.errors,
        latencies_s=counts.latencies_s,
    )


# --- the tables ---------------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds * 1000:.1f} ms"  # NaN: no request at all


def summary_rows(results: Sequence[RunResult], all_cases: Sequence[Case]) -> list[list[str]]:
    rows = []
    baseline: float | None = None
    baseline_cpu_ms: float | None = None
    for case in all_cases:
        mine = [r for r in results if r.case is case]
        if not mine:
            continue
        rates = [r.rate for r in mine]
        cpu_ms = statistics.median(r.service_cpu_s / r.messages * 1000 for r in mine)
        pg_ms = statistics.median(r.pg_cpu_s / r.messages * 1000 for r in mine)
        rate = statistics.median(rates)
        if baseline is None or baseline_cpu_ms is None:
            baseline, baseline_cpu_ms = rate, cpu_ms
        # What one tab request (page or fragment) costs the service: the CPU above (a)'s, spread over them.
        requests = statistics.median(r.pages + r.fragments for r in mine)
        extra_ms = (cpu_ms - baseline_cpu_ms) * mine[0].messages / requests if requests else None
        latencies = sorted(t for r in mine for t in r.latencies_s)
        errors = sum(r.fragment_errors for r in mine)
        rows.append(
            [
                case.label,
                str(len(mine)),
                f"{rate:,.0f} ({min(rates):,.0f} to {max(rates):,.0f})",
                f"{(rate / baseline - 1) * 100:+.1f} %",
                f"{cpu_ms:.3f} ms",
                "—" if extra_ms is None else f"{extra_ms:.1f} ms",
                f"{pg_ms:.3f} ms",
                f"{sum(r.fragments for r in mine):,}" + (f" ({errors} failed)" if errors else ""),
                ms(percentile(latencies, 50)),
                ms(percentile(latencies, 99)),
            ]
        )
    return rows


SUMMARY_HEADER = [
    "case",
    "runs",
    "send rate, msg/s: median (min to max)",
    "rate vs (a)",
    "service CPU / message (median)",
    "service CPU / tab request, above (a)",
    "PostgreSQL CPU / message (median)",
    "fragment requests served",
    "fragment p50",
    "fragment p99",
]


def run_rows(results: Sequence[RunResult]) -> list[list[str]]:
    return [
        [
            str(i + 1),
            r.case.key,
            f"{r.sent:,} / {r.messages:,}",
            f"{r.seconds:.1f} s",
            f"{r.rate:,.0f}",
            f"{r.service_cpu_s / r.messages * 1000:.3f} ms",
            f"{r.pg_cpu_s / r.messages * 1000:.3f} ms",
            f"{r.pages} / {r.fragments}",
            f"{r.load_before} → {r.load_after}",
        ]
        for i, r in enumerate(results)
    ]


RUN_HEADER = [
    "#",
    "case",
    "sent / messages",
    "create → all final",
    "msg/s",
    "service CPU / msg",
    "PostgreSQL CPU / msg",
    "pages / fragments",
    "load before → after",
]


def print_markdown(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# --- main ---------------------------------------------------------------------------------------------------


def service_env(db_url: str, sandbox: Process, args: argparse.Namespace) -> dict[str, str]:
    return {
        "MAILER_DATABASE_URL": db_url,
        "MAILER_PROVIDER_URL": sandbox.base_url,
        "MAILER_PROVIDER_TOKEN": SANDBOX_TOKEN,
        "MAILER_SEND_CONCURRENCY": str(args.concurrency),
        "MAILER_LOG_LEVEL": args.log_level,
        "MAILER_LOGIN_ATTEMPTS_PER_MINUTE": str(LOGIN_ATTEMPTS_PER_MINUTE),
    }


async def main(args: argparse.Namespace) -> None:
    info = machine()
    all_cases = cases(args)
    order = [case for _ in range(args.runs) for case in all_cases]
    results: list[RunResult] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        sandbox = await start_sandbox(SANDBOX_TOKEN)
        try:
            async with BenchDatabase(args.pg_url, f"mailer_bench_admin_tabs_{os.getpid()}") as bench_db:
                info["database"] = "PostgreSQL " + await pg_version(bench_db.db)
                service = await start_service(service_env(bench_db.url, sandbox, args), session)
                tabs = [Tab(service.base_url) for _ in range(args.tabs)]
                try:
                    note(f"service pid {service.pid}, sandbox pid {sandbox.pid}")
                    api = Api(session, service, await access_token(session, service.base_url))
                    imported = await import_customers(
                        session, service.base_url, api.headers, customer_lines(args.customers)
                    )
                    assert imported["created"] == args.customers, imported
                    await asyncio.gather(*(tab.sign_in() for tab in tabs))
                    for i, case in enumerate(order):
                        result = await one_run(case, api, service, bench_db, tabs, args.customers)
                        note(
                            f"run {i + 1}/{len(order)} {case.key}: {result.rate:,.0f} msg/s, "
                            f"{result.service_cpu_s / result.messages * 1000:.3f} ms CPU/msg, "
                            f"{result.fragments} fragments"
                        )
                        results.append(result)
                finally:
                    await asyncio.gather(*(tab.close() for tab in tabs))
                    await service.stop()
        finally:
            await sandbox.stop()
    info["customers / messages per run"] = f"{args.customers:,}"
    info["MAILER_SEND_CONCURRENCY / MAILER_LOG_LEVEL"] = f"{args.concurrency} / {args.log_level}"
    print_markdown("machine", ["key", "value"], [[key, value] for key, value in info.items()])
    print_markdown("admin tabs: every run, in order", RUN_HEADER, run_rows(results))
    print_markdown(
        f"admin tabs: {args.customers:,} messages a run, {args.runs} runs of each case",
        SUMMARY_HEADER,
        summary_rows(results, all_cases),
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
