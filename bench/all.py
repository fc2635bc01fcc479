"""Every benchmark in one run, then one table of each target against what was measured.

    .venv/bin/python bench/all.py [--quick]

Runs, one after the other (each starts and stops its own processes and databases):
dispatch on PostgreSQL (send rate against the bare client, CPU per message, activation of `--messages`, the
window change, peak memory), dispatch on SQLite (part a only), the API benchmark (import, reads,
statistics), and the engine's own CPU per message without HTTP or database. Each script's own tables are
printed as they finish; the summary at the end lists every row that has a target. `--quick` runs everything
tiny (a smoke run: figures mean nothing, but every path runs).
Extra options after `--` go to every script, e.g. `-- --pg-url postgresql://…`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable

FULL: dict[str, list[str]] = {
    "dispatch, PostgreSQL": ["dispatch.py"],
    "dispatch, SQLite": ["dispatch.py", "--database", "sqlite", "--skip", "bc"],
    "API, PostgreSQL": ["api.py"],
    "engine without HTTP or database": ["engine.py"],
}
QUICK_ARGS: dict[str, list[str]] = {
    "dispatch.py": ["--customers", "200", "--messages", "300", "--dispatch-s", "2"],
    "engine.py": ["--messages", "500", "--rounds", "1"],
    "api.py": [
        "--customers", "200", "--messages", "500", "--clients", "2",
        "--duration-s", "0.5", "--single-client-s", "0.3", "--warmup-s", "0.1",
    ],
}  # fmt: skip


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every benchmark")
    args, extra = parser.parse_known_args()
    return args, [a for a in extra if a != "--"]


def target_rows(markdown: str) -> list[tuple[str, str, str]]:
    """Rows `| measure | value | target |` of a script's tables whose target is set."""
    rows = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2] and cells[2] != "target" and not set(cells[2]) <= {"-"}:
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def main() -> int:
    args, extra = parse_args()
    summary: list[tuple[str, str, str, str]] = []
    failed = []
    for name, command in FULL.items():
        script = command[0]
        sizes = QUICK_ARGS[script] if args.quick else []
        argv = [PYTHON, str(BENCH / script), *command[1:], *sizes, *extra]
        print(f"## {name}\n", flush=True)
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
        print(done.stdout, flush=True)
        if done.returncode != 0:
            failed.append(name)
            continue
        summary += [(name, *row) for row in target_rows(done.stdout)]
    print("## targets\n")
    print("| benchmark | measure | value | target |")
    print("| --- | --- | --- | --- |")
    for row in summary:
        print("| " + " | ".join(row) + " |")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
