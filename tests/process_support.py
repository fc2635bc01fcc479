"""Helpers for the fault tests that run mailer as real processes: the standalone sandbox provider and the
service (`run.py`) on free loopback ports, readiness polled with deadlines, signals sent by pid, and
everything started killed and reaped when the owning fixture ends.

Nothing here sleeps as synchronisation: every wait polls an observable state (a port printed, /readyz,
the sandbox's counters, a process's exit) against a deadline and fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg

from tests.conftest import ADMIN_PASSWORD, JWT_SECRET, PG_ADMIN_URL
from tests.harness import REPO_ROOT, child_env, sandbox_argv, sandbox_url
from tests.harness import free_port as free_port  # the fault tests take it from here with the rest
from tests.polling import eventually

# The interpreter running the tests is the project's venv: children use the same one.
PYTHON = sys.executable
SANDBOX_TOKEN = "process-sandbox-token"
# Polling period: short enough to catch a 503 during a two-second outage, long enough to cost nothing.
POLL_S = 0.05
# A cold start imports the app, migrates (a no-op when the schema is current) and starts the engine.
START_TIMEOUT_S = 30.0
# One HTTP call to a child; a child that does not answer in this time is stuck, not slow.
HTTP_TIMEOUT_S = 30.0
# How long a killed or terminated child may take to be reaped before the helper gives up on it.
REAP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000

# Settings every service process gets: quick retries and recovery, quiet logs (the fault tests read the
# sandbox, not the logs), and one signing secret so that a token works on every process.
BASE_SERVICE_ENV: dict[str, str] = {
    "MAILER_HOST": "127.0.0.1",
    "MAILER_PROVIDER_TOKEN": SANDBOX_TOKEN,
    "MAILER_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MAILER_JWT_SECRET": JWT_SECRET,
    "MAILER_LOG_LEVEL": "WARNING",
    "MAILER_LOG_FORMAT": "json",
    "MAILER_SEND_CONCURRENCY": "32",
    "MAILER_LEASE_S": "3",
    "MAILER_RETRY_BASE_S": "0.05",
    "MAILER_RETRY_CAP_S": "0.5",
    "MAILER_BREAKER_COOLDOWN_S": "0.5",
    "MAILER_SEND_TIMEOUT_S": "5",
    "MAILER_SHUTDOWN_GRACE_S": "3",
}


def run_python(
    args: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with `args` in the repository, with `env` and no MAILER_* variable of ours."""
    return subprocess.run(
        [PYTHON, *args],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# --- processes -------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Child:
    """One process started by a `Processes` group, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean anything up."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def wait(self, timeout_s: float = REAP_TIMEOUT_S) -> int:
        """Reap the process; its exit code (negative: the signal that ended it)."""
        return self.popen.wait(timeout_s)

    async def wait_exit(self, timeout_s: float) -> int:
        """Until the process has exited (polled, so the event loop keeps running); its exit code."""
        await eventually(lambda: _done(not self.alive()), timeout_s, f"{self.name} exit")
        return self.wait()

    def log_tail(self) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-LOG_TAIL_CHARS:]

    def close(self) -> None:
        """Kill if still running, reap, close the log: never leaves a zombie or an open file behind."""
        try:
            self.kill()
            self.wait()
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        finally:
            self._log.close()


async def _done(flag: bool) -> bool:
    return flag


class Processes:
    """Starts children and owns them: `close` kills and reaps every one still running (fixture teardown)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Child] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.workdir / f"{name}-{len(self.children)}.log"
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        except BaseException:
            log.close()
            raise
        child = Child(name, popen, log_path, log)
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.children):
            child.close()

    async def start_sandbox(self, *, latency_ms: float = 0.0, name: str = "sandbox") -> Sandbox:
        """The standalone sandbox on a port of its choosing, read back from the line it prints."""
        argv = sandbox_argv(PYTHON, SANDBOX_TOKEN, "--latency-ms", str(latency_ms), "--seed", "1")
        child = self.spawn(name, argv, child_env())

        async def url() -> str | None:
            if not child.alive():
                raise AssertionError(f"{name} exited early:\n{child.log_tail()}")
            return sandbox_url(child.log_path.read_text(encoding="utf-8", errors="replace"))

        return Sandbox(child, await eventually(url, START_TIMEOUT_S, f"{name} listening"))

    def spawn_service(self, name: str, database_url: str, provider_url: str, **env: str) -> Service:
        """`python run.py` on a free port; call `wait_ready` before using it."""
        port = free_port()
        values = {
            **child_env(),
            **BASE_SERVICE_ENV,
            "MAILER_DATABASE_URL": database_url,
            "MAILER_PORT": str(port),
            "MAILER_PROVIDER_URL": provider_url,
            **env,
        }
        return Service(self.spawn(name, [PYTHON, "run.py"], values), f"http://127.0.0.1:{port}")

    async def start_service(self, name: str, database_url: str, provider_url: str, **env: str) -> Service:
        service = self.spawn_service(name, database_url, provider_url, **env)
        await service.wait_ready()
        return service


# The name tests/test_system.py starts its children with.
_clean_env = child_env


@contextmanager
def processes(workdir: Path) -> Iterator[Processes]:
    group = Processes(workdir)
    try:
        yield group
    finally:
        group.close()


# --- the sandbox and the service over HTTP ---------------------------------------------------------------


async def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url, headers=headers) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return await resp.json()


@dataclass(eq=False)
class Sandbox:
    """The standalone sandbox process; its control API tells what it accepted."""

    child: Child
    url: str

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await _get_json(f"{self.url}/_control/stats")
        return result

    async def set_faults(self, **changes: float) -> None:
        """Change the injected faults (PUT /_control/faults)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as session,
            session.put(f"{self.url}/_control/faults", json=changes) as resp,
        ):
            assert resp.status == 200, await resp.text()

    async def accepted(self) -> int:
        return int((await self.stats())["accepted"])

    async def counts(self) -> dict[int, int]:
        """{message id: requests accepted for it}."""
        raw: dict[str, int] = await _get_json(f"{self.url}/_control/counts")
        return {int(k): v for k, v in raw.items()}


@dataclass(eq=False)
class Service:
    """One `run.py` process and an API client for it (a token is fetched on first use)."""

    child: Child
    url: str
    _token: str | None = field(default=None, repr=False)

    async def ready_status(self) -> int | None:
        """The status of GET /readyz, or None when nothing answers."""
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.url}/readyz") as resp,
            ):
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Until /readyz says 200 (fails at once, with the log, if the process exits); seconds taken."""
        started = time.monotonic()

        async def ready() -> bool:
            if not self.child.alive():
                raise AssertionError(f"{self.child.name} exited early:\n{self.child.log_tail()}")
            return await self.ready_status() == 200

        await eventually(ready, timeout_s, f"{self.child.name} ready")
        return time.monotonic() - started

    async def _headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if self._token is None:
            form = {"username": "admin", "password": ADMIN_PASSWORD}
            async with session.post(f"{self.url}/auth/token", data=form) as resp:
                assert resp.status == 200, await resp.text()
                self._token = str((await resp.json())["access_token"])
        return {"Authorization": f"Bearer {self._token}"}

    async def import_customers(self, count: int) -> None:
        """`count` customers in one NDJSON import request."""
        body = "".join(f'{{"phone": "7900{i:07d}", "timezone": "UTC"}}\n' for i in range(count))
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S * 4)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = {**await self._headers(session), "Content-Type": "application/x-ndjson"}
            async with session.post(
                f"{self.url}/api/customers/import", data=body.encode(), headers=headers
            ) as resp:
                assert resp.status == 200, await resp.text()
                result = await resp.json()
        assert result["created"] + result["updated"] == count, result

    async def create_mailout(self, text: str = "crash test") -> int:
        """A mailout for everyone, due now, ending far enough away never to cut anything."""
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "start_at": (now - timedelta(seconds=1)).isoformat(),
            "end_at": (now + timedelta(hours=1)).isoformat(),
            "text": text,
            "filter": {"operator_codes": [], "tags": []},
            "send_window": None,
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as session:
            headers = await self._headers(session)
            async with session.post(f"{self.url}/api/mailouts/", json=body, headers=headers) as resp:
                assert resp.status == 201, await resp.text()
                return int((await resp.json())["id"])

    async def stats(self, mailout_id: int) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as session:
            headers = await self._headers(session)
            async with session.get(f"{self.url}/api/mailouts/{mailout_id}/stats", headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                result: dict[str, Any] = await resp.json()
                return result


# --- PostgreSQL scratch databases ------------------------------------------------------------------------


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def terminate_backends_for(database: str, duration_s: float, period_s: float = POLL_S) -> int:
    """Kill every session of one database but our own, again and again for `duration_s`: what clients see
    of a PostgreSQL restart (connections dropped, new ones dropped too until it is back). Returns the number
    of sessions killed."""
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    killed = 0
    try:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            killed += int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database,
                )
            )
            await asyncio.sleep(period_s)  # the outage's rhythm, not synchronisation
        return killed
    finally:
        await conn.close()


# --- what the fault tests check --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What the sandbox accepted for one mailout, against what mailer says it sent."""

    unique: int
    accepted: int
    duplicates: int
    stats_sent: int
    by_status: dict[str, int]


def delivery(sandbox_counts: dict[int, int], stats: dict[str, Any]) -> Delivery:
    """Compare the sandbox's per-id counts with a mailout's statistics."""
    return Delivery(
        unique=len(sandbox_counts),
        accepted=sum(sandbox_counts.values()),
        duplicates=sum(n - 1 for n in sandbox_counts.values()),
        stats_sent=int(stats["by_status"]["sent"]),
        by_status=dict(stats["by_status"]),
    )


def merge_counts(*counts: dict[int, int]) -> dict[int, int]:
    """Per-id counts summed over several sandboxes."""
    merged: dict[int, int] = {}
    for one in counts:
        for msg_id, n in one.items():
            merged[msg_id] = merged.get(msg_id, 0) + n
    return merged


async def finished(service: Service, mailout_id: int, total: int) -> dict[str, Any] | None:
    """The stats once every message is sent and none is pending or in sending, else None."""
    stats = await service.stats(mailout_id)
    by_status = stats["by_status"]
    if by_status["sent"] == total and by_status["pending"] == 0 and by_status["sending"] == 0:
        return stats
    return None
