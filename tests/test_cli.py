"""The entry points as a user runs them: bad configuration is named, migrate works on an empty database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_a_bad_variable_is_named_and_nothing_starts(tmp_path: Path) -> None:
    result = run(
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
    result = run(["run.py"], {"MAILER_DATABASE_URL": "mysql://root@localhost/x"})
    assert result.returncode == 2
    assert "MAILER_DATABASE_URL" in result.stderr


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    result = run(["-m", "mailer", "migrate"], {"MAILER_DATABASE_URL": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"customers", "mailouts", "messages", "message_attempts"} <= tables
    # Running it again is a no-op, not an error.
    assert run(["-m", "mailer", "migrate"], {"MAILER_DATABASE_URL": f"sqlite:///{db}"}).returncode == 0
