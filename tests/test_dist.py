"""The smallest deployments: the `mailer` console command, and `make dist`'s dist/mailer.pyz started with
nothing but Python 3.12 (no venv, no installed package) on SQLite."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ADMIN_PASSWORD, JWT_SECRET
from tests.polling import eventually
from tests.process_support import Processes, free_port

ROOT = Path(__file__).resolve().parent.parent
# Building the zipapp installs every dependency into it: about 20 s from pip's cache.
BUILD_TIMEOUT_S = 300
# The first start unpacks the zipapp into SHIV_ROOT, then imports and migrates.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
COMMANDS = ("serve", "migrate", "sandbox", "report")


def base_python() -> str:
    """Python 3.12 itself, not this venv: what a machine with only Python on it has."""
    for candidate in (Path(sys.base_prefix) / "bin" / "python3.12", shutil.which("python3.12")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.skip("no python3.12 outside the venv")


def bare_env(**extra: str) -> dict[str, str]:
    """The environment without the venv or any MAILER_* variable."""
    drop = ("MAILER_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return {**env, **extra}


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dist/mailer.pyz, built by the script `make dist` runs, into a scratch directory."""
    out = tmp_path_factory.mktemp("dist") / "mailer.pyz"
    bin_dir = str(Path(sys.executable).parent)
    built = subprocess.run(
        ["sh", "deploy/dist.sh", bin_dir, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_the_console_command_has_every_subcommand_and_migrates(tmp_path: Path) -> None:
    mailer = Path(sys.executable).parent / "mailer"
    assert mailer.exists(), "pyproject.toml [project.scripts] declares `mailer`; reinstall with make install"
    shown = subprocess.run([str(mailer), "--help"], capture_output=True, text=True, timeout=60, check=True)
    for command in COMMANDS:
        assert command in shown.stdout
    db = tmp_path / "console.db"
    migrated = subprocess.run(
        [str(mailer), "migrate"],
        env=bare_env(MAILER_DATABASE_URL=f"sqlite:///{db}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"customers", "mailouts", "messages"} <= tables


async def status_of(url: str) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as resp,
        ):
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
async def test_the_pyz_serves_on_sqlite_with_only_python(pyz: Path, procs: Processes, tmp_path: Path) -> None:
    port = free_port()
    env = bare_env(
        SHIV_ROOT=str(tmp_path / "shiv"),
        MAILER_HOST="127.0.0.1",
        MAILER_PORT=str(port),
        MAILER_DATABASE_URL=f"sqlite:///{tmp_path / 'pyz.db'}",
        MAILER_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MAILER_JWT_SECRET=JWT_SECRET,
        MAILER_LOG_FORMAT="json",
    )
    # -I (isolated): neither the working directory (the repository) nor PYTHON* variables reach sys.path,
    # so everything mailer imports comes from inside the zip.
    child = procs.spawn("pyz", [base_python(), "-I", str(pyz), "serve"], env)
    base = f"http://127.0.0.1:{port}"

    async def answers(path: str) -> bool:
        if not child.alive():
            raise AssertionError(f"the pyz exited early:\n{child.log_tail()}")
        return await status_of(base + path) == 200

    await eventually(lambda: answers("/healthz"), START_TIMEOUT_S, "the pyz answering /healthz")
    await eventually(lambda: answers("/readyz"), START_TIMEOUT_S, "the pyz ready")
    # The built-in sandbox and the API are there, from inside the zip (package data included).
    assert await status_of(base + "/docs/") == 200
    child.terminate()
    assert await child.wait_exit(STOP_TIMEOUT_S) == 0, child.log_tail()
