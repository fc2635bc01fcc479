"""Command-line entry points: serve (the default), migrate, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from mailer.settings import Settings


def load_settings() -> Settings:
    """Settings from the environment, or a clear message naming each bad variable and exit 2."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            name = "MAILER_" + "_".join(str(part) for part in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        print("mailer: invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def serve(settings: Settings) -> int:
    from aiohttp import web

    from mailer.app import create_app
    from mailer.observability.logging import configure_logging
    from mailer.store.db import DatabaseInUseError

    configure_logging(settings)
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_grace_s,
            access_log=None,
            print=lambda text: print(text, file=sys.stderr, flush=True),
        )
    except DatabaseInUseError as exc:
        print(f"mailer: {exc}", file=sys.stderr)
        return 1
    return 0


def migrate(settings: Settings) -> int:
    from mailer.store.db import migrate as run_migrations

    asyncio.run(run_migrations(settings.database_url))
    print("mailer: database schema is up to date", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailer", description="notification mailout service")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("sandbox", help="run the sandbox provider alone (see --help)", add_help=False)
    args, rest = parser.parse_known_args(argv)

    if args.command == "sandbox":
        from mailer.provider.sandbox import main as sandbox_main

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = load_settings()
    if args.command == "migrate":
        return migrate(settings)
    return serve(settings)
