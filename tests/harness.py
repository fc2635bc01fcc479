"""The process harness the fault tests (tests/process_support.py) and the benchmarks (bench/common.py) share:
the repository and its interpreter, free loopback ports, a child's environment, how the standalone sandbox is
started and says where it listens, and polling with a deadline.

It imports neither pytest nor tests/conftest, so that bench/ can use it outside a test run.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from tests.polling import eventually

REPO_ROOT = Path(__file__).resolve().parent.parent
# The project's interpreter: children run the same code with the same dependencies.
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
# The line the standalone sandbox prints once it listens, followed by its base URL.
SANDBOX_LISTENING = "sandbox listening on "
# A server that does not answer this fast is not there for a test or a bench run.
ADMIN_CONNECT_TIMEOUT_S = 5


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice, released at once for the child to take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(values: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any MAILER_* variable, plus `values`: a child is configured only by its
    starter, never by what happens to be set in the shell that ran the tests or the bench."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return {**clean, **(values or {})}


def sandbox_argv(python: str | Path, token: str, *extra: str) -> list[str]:
    """`python -m mailer sandbox` on loopback, on a port it picks and prints (see `sandbox_url`)."""
    argv = [str(python), "-m", "mailer", "sandbox", "--host", "127.0.0.1", "--port", "0", "--token", token]
    return [*argv, *extra]


def sandbox_url(output: str) -> str | None:
    """The sandbox's base URL from what it printed so far, or None before it listens."""
    for line in output.splitlines():
        if line.startswith(SANDBOX_LISTENING):
            return line.removeprefix(SANDBOX_LISTENING).strip()
    return None


async def timed_poll(check: Callable[[], Awaitable[bool]], interval_s: float, timeout_s: float) -> float:
    """Call `check` every `interval_s` until it returns True; the seconds it took. Raises TimeoutError."""
    started = time.perf_counter()
    try:
        await eventually(check, timeout_s, "condition", interval_s)
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None
    return time.perf_counter() - started


# --- scratch PostgreSQL databases -------------------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server `admin_url` points at."""
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


async def create_database(admin_url: str, name: str) -> str:
    """Create database `name` (dropping a leftover of the same name first); its URL."""
    await _admin_statements(
        admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    return database_url(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` and end its sessions."""
    await _admin_statements(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin_statements(admin_url: str, *statements: str) -> None:
    # asyncpg directly: CREATE/DROP DATABASE cannot run in a transaction, and no pool is worth making for two.
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=ADMIN_CONNECT_TIMEOUT_S)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
