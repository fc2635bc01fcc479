"""The entry points as a user runs them: bad configuration is named, migrate works on an empty database."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path

from tests.conftest import ADMIN_PASSWORD
from tests.process_support import Processes, run_python


def test_a_bad_variable_is_named_and_nothing_starts(tmp_path: Path) -> None:
    result = run_python(
        ["run.py"],
        {
            "MAILER_PORT": "eighty",
            "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
            "MAILER_SEND_CONCURRENCY": "0",
        },
    )
    assert result.returncode == 2
    assert "MAILER_PORT" in result.stderr
    assert "MAILER_SEND_CONCURRENCY" in result.stderr
    assert not (tmp_path / "m.db").exists()


def test_an_unknown_database_scheme_is_refused(tmp_path: Path) -> None:
    result = run_python(["run.py"], {"MAILER_DATABASE_URL": "mysql://root@localhost/x"})
    assert result.returncode == 2
    assert "MAILER_DATABASE_URL" in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    result = run_python(["-m", "mailer", "migrate"], {"MAILER_DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"customers", "mailouts", "messages", "message_attempts"} <= tables
    # Running it again is a no-op, not an error.
    assert run_python(["-m", "mailer", "migrate"], {"MAILER_DATABASE_URL": f"sqlite:///{db}"}).returncode == 0


def test_a_weak_secret_is_refused_by_name_without_echoing_it(tmp_path: Path) -> None:
    result = run_python(
        ["run.py"],
        {
            "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
            "MAILER_JWT_SECRET": "CHANGE-ME",
            "MAILER_ADMIN_PASSWORD": "a",
        },
    )
    assert result.returncode == 2
    assert "MAILER_JWT_SECRET: must be at least 32 bytes long" in result.stderr
    assert "MAILER_ADMIN_PASSWORD: must be at least 12 characters long" in result.stderr
    assert "CHANGE-ME" not in result.stderr
    assert not (tmp_path / "m.db").exists()


def test_a_port_in_use_is_one_line_and_exit_2_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_python(
            ["run.py"],
            {
                "MAILER_DATABASE_URL": f"sqlite:///{tmp_path}/m.db",
                "MAILER_PORT": str(port),
                "MAILER_ADMIN_PASSWORD": ADMIN_PASSWORD,
            },
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "MAILER_PORT" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.db").exists()  # no migration ran


# Nothing is sent in these tests: a provider address where nothing listens will do.
NO_PROVIDER = "http://127.0.0.1:9"
HEADER_TIMEOUT_S = 1.0
# Generous against a loaded machine; the default without the setting would be 75 s.
CLOSED_WITHIN_S = 10.0


async def test_a_socket_that_never_finishes_its_headers_is_closed(procs: Processes, tmp_path: Path) -> None:
    service = await procs.start_service(
        "service",
        f"sqlite:///{tmp_path}/m.db",
        NO_PROVIDER,
        MAILER_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
    )
    host, port = service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        started = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # half a header, then nothing
        await writer.drain()
        async with asyncio.timeout(CLOSED_WITHIN_S):
            rest = await reader.read()  # b"" once the server closes the connection
        closed_after_s = time.monotonic() - started
    finally:
        writer.close()
    assert rest == b""
    assert HEADER_TIMEOUT_S * 0.5 <= closed_after_s < CLOSED_WITHIN_S
    # A well-behaved client on another connection is served meanwhile and after.
    assert await service.ready_status() == 200


async def test_aiohttps_own_error_answers_name_no_versions(procs: Processes, tmp_path: Path) -> None:
    service = await procs.start_service("service", f"sqlite:///{tmp_path}/m.db", NO_PROVIDER)
    host, port = service.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"NOT A REQUEST LINE\r\n\r\n")  # answered by the HTTP parser, before any app
        await writer.drain()
        async with asyncio.timeout(CLOSED_WITHIN_S):
            answer = await reader.read()
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    assert head.startswith(("HTTP/1.0 400", "HTTP/1.1 400")), head
    assert "aiohttp" not in head
    assert "Python" not in head
