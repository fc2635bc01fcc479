"""Shared helpers of the benchmarks: processes, a bench database, readiness, RSS sampling, percentiles."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.harness import (
    PYTHON,
    REPO_ROOT,
    child_env,
    create_database,
    drop_database,
    free_port,
    sandbox_argv,
    sandbox_url,
    timed_poll,
)

# The shared process harness (the fault tests use it too); bench/ takes these names from here.
REPO = REPO_ROOT
poll = timed_poll
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "bench-admin-password"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef"
# How long a freshly started process may take to answer (migrations included) before the bench gives up.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
RSS_SAMPLE_S = 0.5


def load() -> str:
    """The 1/5/15-minute load averages, to print next to every figure: other people use this machine."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load": load(),
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def print_table(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """Rows of (measure, value, target) as a Markdown table, ready to paste."""
    print(f"\n### {title}\n")
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    for measure, value, target in rows:
        print(f"| {measure} | {value} | {target} |")
    sys.stdout.flush()


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {message}", file=sys.stderr, flush=True)


# --- the bench database -------------------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    """A fresh PostgreSQL database, dropped on exit; `url` is what MAILER_DATABASE_URL takes."""

    admin_url: str
    name: str
    url: str = ""
    engine: AsyncEngine | None = None

    async def __aenter__(self) -> BenchDatabase:
        self.url = await create_database(self.admin_url, self.name)
        self.engine = create_async_engine(self.url.replace("postgresql://", "postgresql+asyncpg://", 1))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.engine is not None:
            await self.engine.dispose()
        await drop_database(self.admin_url, self.name)

    @property
    def db(self) -> AsyncEngine:
        assert self.engine is not None, "use the database inside `async with`"
        return self.engine


async def pg_version(db: AsyncEngine) -> str:
    async with db.connect() as conn:
        return str((await conn.execute(text("SHOW server_version"))).scalar_one())


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class Process:
    """A child process the bench started (and only it stops), with its output in `log_path`."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    base_url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _log_file(name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f"mailer-bench-{name}-", suffix=".log")
    os.close(fd)
    return Path(path)


async def start_service(env: Mapping[str, str], session: aiohttp.ClientSession) -> Process:
    """`.venv/bin/python run.py` with MAILER_* from `env` on a free port; returns once /readyz answers 200."""
    port = free_port()
    full_env = child_env(
        {
            "MAILER_HOST": "127.0.0.1",
            "MAILER_PORT": str(port),
            "MAILER_LOG_LEVEL": "WARNING",
            "MAILER_LOG_FORMAT": "json",
            "MAILER_ADMIN_USERNAME": ADMIN_USERNAME,
            "MAILER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "MAILER_JWT_SECRET": JWT_SECRET,
            **env,
        }
    )
    log_path = _log_file("service")
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            str(PYTHON),
            str(REPO / "run.py"),
            cwd=str(REPO),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    service = Process("service", proc, log_path, f"http://127.0.0.1:{port}")
    try:
        await _wait_ready(service, session, "/readyz")
    except BaseException:
        await service.stop()
        raise
    return service


async def _wait_ready(process: Process, session: aiohttp.ClientSession, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.proc.returncode is not None:
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.log_tail()}")
        try:
            async with session.get(process.base_url + path) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)  # a start-up poll: there is nothing to wait on across processes
    raise RuntimeError(f"{process.name} not ready within {START_TIMEOUT_S:g} s:\n{process.log_tail()}")


async def start_sandbox(token: str) -> Process:
    """`python -m mailer sandbox` on a port it picks; returns once it prints where it listens."""
    log_path = _log_file("sandbox")
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *sandbox_argv(PYTHON, token),
            cwd=str(REPO),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
        )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    url = sandbox_url(line.decode())
    if url is None:
        proc.kill()
        await proc.wait()
        raise RuntimeError(f"sandbox did not start: {line!r}")
    return Process("sandbox", proc, log_path, url)


def start_py_spy(pid: int, out: Path, duration_s: int) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `duration_s` into `out` as collapsed stacks (pip install py-spy)."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            *(str(spy), "record", "--pid", str(pid), "--duration", str(duration_s)),
            *("--rate", "100", "--format", "raw", "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- the API ------------------------------------------------------------------------------------------------


async def access_token(session: aiohttp.ClientSession, base_url: str) -> str:
    async with session.post(
        base_url + "/auth/token", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    ) as response:
        response.raise_for_status()
        body = await response.json()
    return str(body["access_token"])


def customer_lines(n: int, first: int = 0, zones: Sequence[str] = ("UTC",)) -> bytes:
    """NDJSON of `n` distinct customers (phones 79000000000 + i), as the import takes it."""
    tags = ("vip", "new", "regular", None)
    lines = []
    for i in range(first, first + n):
        tag = tags[i % len(tags)]
        tag_json = "null" if tag is None else f'"{tag}"'
        lines.append(f'{{"phone": "79{i:09d}", "tag": {tag_json}, "timezone": "{zones[i % len(zones)]}"}}\n')
    return "".join(lines).encode()


async def import_customers(
    session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str], body: bytes
) -> dict[str, Any]:
    async with session.post(
        base_url + "/api/customers/import",
        data=body,
        headers={**headers, "Content-Type": "application/x-ndjson"},
        timeout=aiohttp.ClientTimeout(total=600),
    ) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
    return result


# --- load generation ----------------------------------------------------------------------------------------


@dataclass
class LatencyResult:
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    # Every request answered, warm-up included, and the service's CPU seconds over the same time (when the
    # caller passed its pid): their quotient is the CPU per request.
    answered: int = 0
    service_cpu_s: float | None = None

    def row(self, name: str, target: str, rate_target: str = "") -> list[tuple[str, str, str]]:
        values = sorted(self.latencies_s)
        rate = len(values) / self.elapsed_s if self.elapsed_s else math.nan
        return [
            (f"{name}: requests (errors)", f"{len(values):,} ({self.errors})", ""),
            (f"{name}: throughput", f"{rate:,.0f} req/s", rate_target),
            (f"{name}: p50", f"{percentile(values, 50) * 1000:.1f} ms", ""),
            (f"{name}: p99", f"{percentile(values, 99) * 1000:.1f} ms", target),
            (f"{name}: max", f"{(values[-1] if values else math.nan) * 1000:.1f} ms", ""),
            *(
                [
                    (
                        f"{name}: service CPU per request",
                        f"{self.service_cpu_s / self.answered * 1000:.3f} ms",
                        "",
                    )
                ]
                if self.service_cpu_s is not None and self.answered
                else []
            ),
        ]


async def closed_loop(
    session: aiohttp.ClientSession,
    url_of: Callable[[random.Random], str],
    headers: Mapping[str, str],
    clients: int,
    duration_s: float,
    warmup_s: float,
    service_pid: int | None = None,
) -> LatencyResult:
    """`clients` workers send GET after GET for `duration_s`; requests started in the warm-up don't count
    toward the latencies (they do toward the CPU per request, measured over the whole loop)."""
    result = LatencyResult()
    cpu_before = cpu_seconds(service_pid) if service_pid is not None else None
    started = time.perf_counter()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        while (t0 := time.perf_counter()) < stop_at:
            async with session.get(url_of(rng), headers=headers) as response:
                await response.read()
                ok = response.status == 200
            result.answered += 1
            if t0 >= measure_from:
                if ok:
                    result.latencies_s.append(time.perf_counter() - t0)
                else:
                    result.errors += 1

    await asyncio.gather(*(worker(i) for i in range(clients)))
    result.elapsed_s = time.perf_counter() - measure_from
    if service_pid is not None and cpu_before is not None:
        result.service_cpu_s = cpu_seconds(service_pid) - cpu_before
    return result


# --- memory -------------------------------------------------------------------------------------------------


def read_memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in KiB, from /proc/<pid>/status."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


@dataclass
class RssSampler:
    """Samples VmRSS and VmHWM of one process every RSS_SAMPLE_S while running, with named marks."""

    pid: int
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    def mark(self, name: str) -> tuple[int, int]:
        self.marks[name] = read_memory_kb(self.pid)
        return self.marks[name]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        t0 = time.monotonic()
        while True:
            try:
                rss, hwm = read_memory_kb(self.pid)
            except OSError:
                return  # the process is gone
            self.samples.append((time.monotonic() - t0, rss, hwm))
            await asyncio.sleep(RSS_SAMPLE_S)

    @property
    def max_rss_kb(self) -> int:
        return max((rss for _, rss, _ in self.samples), default=0)

    @property
    def hwm_kb(self) -> int:
        return max((hwm for _, _, hwm in self.samples), default=0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # Fields 14 and 15 (utime, stime), counted from 1 with pid and comm, are 11 and 12 after the ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


class Api:
    """The few calls of the service's API the benchmarks make, with the token in place."""

    def __init__(self, session: aiohttp.ClientSession, service: Process, token: str) -> None:
        self.session = session
        self.base_url = service.base_url
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, self.base_url + path, json=body, headers=self.headers
        ) as response:
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")
            return await response.json()

    async def create_mailout(self, text: str, window: dict[str, str] | None = None) -> int:
        """A mailout to everyone, started a minute ago, ending in a day."""
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "start_at": (now - timedelta(minutes=1)).isoformat(),
            "end_at": (now + timedelta(days=1)).isoformat(),
            "text": text,
        }
        if window is not None:
            body["send_window"] = window
        return int((await self.call("POST", "/api/mailouts/", body))["id"])

    async def stats(self, mailout_id: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/api/mailouts/{mailout_id}/stats")
        return result

    async def metric(self, name: str) -> float:
        """The value of an unlabelled series of the service's /metrics (0 when absent)."""
        async with self.session.get(self.base_url + "/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    async def status(self, mailout_id: int) -> str:
        return str((await self.call("GET", f"/api/mailouts/{mailout_id}"))["status"])
