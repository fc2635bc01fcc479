"""The shared process harness: the benchmarks can use it outside a test run, and its helpers do what the
fault tests and the benchmarks rely on."""

from __future__ import annotations

import os
import socket

import pytest

from tests.harness import child_env, free_port, sandbox_argv, sandbox_url, timed_poll
from tests.process_support import run_python


def test_the_benchmarks_load_without_pytest_or_the_test_fixtures() -> None:
    probe = (
        "import sys, bench.common, bench.dispatch; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest') "
        "or m == 'tests.conftest'))"
    )
    result = run_python(["-c", probe], {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_free_port_can_be_bound_by_the_child() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_a_child_sees_no_mailer_setting_of_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", "sqlite:///from-the-shell.db")
    env = child_env({"MAILER_PORT": "1"})
    assert "MAILER_DATABASE_URL" not in env
    assert env["MAILER_PORT"] == "1"
    assert env["PATH"] == os.environ["PATH"]


def test_the_sandbox_url_is_read_from_its_listening_line_only() -> None:
    assert sandbox_url("starting\n") is None
    assert sandbox_url("x\nsandbox listening on http://127.0.0.1:4321 \n") == "http://127.0.0.1:4321"
    argv = sandbox_argv("py", "tok", "--seed", "1")
    assert argv[:4] == ["py", "-m", "mailer", "sandbox"]
    assert argv[argv.index("--token") + 1] == "tok"
    assert argv[-2:] == ["--seed", "1"]


async def test_timed_poll_says_how_long_and_times_out_as_timeout_error() -> None:
    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    interval_s = 0.01
    # Two waits of an interval lie between the three calls: the time reported includes them.
    assert await timed_poll(third_time, interval_s, 5) >= 2 * interval_s
    assert calls == 3

    async def never() -> bool:
        return False

    with pytest.raises(TimeoutError):
        await timed_poll(never, 0.001, 0.01)
