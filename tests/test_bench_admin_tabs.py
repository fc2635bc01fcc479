"""A tiny run of bench/admin_tabs.py, so that the benchmark never rots. No figure is asserted (the machines
are shared and noisy): only that it runs to the end and prints its summary table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TIMEOUT_S = 180
SUMMARY_HEADER = (
    "| case | runs | send rate, msg/s: median (min to max) | rate vs (a) | service CPU / message (median) |"
)


@pytest.mark.timeout(SMOKE_TIMEOUT_S + 30)
def test_the_quick_run_completes_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "bench/admin_tabs.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert SUMMARY_HEADER in done.stdout, done.stdout[-3000:]
    for case in ("(a) no dashboard open", "(b) 10 tabs, every 3 s", "(c) 10 tabs, every 0.3 s"):
        assert case in done.stdout, f"{case!r} missing from the benchmark output"
