"""A tiny run of every benchmark, so that the benchmarks themselves never rot. No figure is asserted (the
machines are shared and noisy): only that each script runs to the end and prints the rows it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TIMEOUT_S = 240


def run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_the_whole_set_runs_tiny_and_prints_the_targets() -> None:
    out = run("bench/all.py", "--quick")
    for wanted in (
        "(a) mailer: service CPU per message",
        "(a) bare: client CPU per request",
        "(a) ratio mailer / the faster bare client",
        "(b) activation",
        "import: rate",
        "GET /api/customers/{id}: service CPU per request",
        "GET /api/mailouts/{id}/stats",
        "Engine without HTTP or database",
    ):
        assert wanted in out, f"{wanted!r} missing from the benchmark output"
    summary = out.rpartition("## targets")[2]
    assert "dispatch, SQLite" in summary
    assert "dispatch, PostgreSQL" in summary
    assert "API, PostgreSQL" in summary


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_the_outcome_write_benchmark_runs_tiny() -> None:
    out = run("bench/record.py", "--messages", "300", "--batch", "50", "--rounds", "1")
    assert "per outcome" in out, out[-2000:]
