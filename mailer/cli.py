"""Command-line entry points: serve (the default), migrate, sandbox, report."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from datetime import date

from pydantic import ValidationError

from mailer.settings import Settings

# A directory of one-value files named like the variables (mailer_jwt_secret, any case), read by
# pydantic-settings' secrets_dir: how containers get secrets without them in the environment
# (docs/deploy.md). Unset: no files are read. A variable set in the environment wins over its file.
SECRETS_DIR_VARIABLE = "MAILER_SECRETS_DIR"


def load_settings() -> Settings:
    """Settings from the environment and MAILER_SECRETS_DIR, or a clear message naming each bad variable
    and exit 2."""
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE) or None
    if secrets_dir is not None and not os.path.isdir(secrets_dir):
        # pydantic-settings would only warn and go on without the secrets: say it, and start nothing.
        print(f"mailer: {SECRETS_DIR_VARIABLE}={secrets_dir} is not a directory", file=sys.stderr)
        raise SystemExit(2)
    try:
        return Settings(_secrets_dir=secrets_dir)
    except OSError as exc:  # a file there that this user may not read
        print(f"mailer: cannot read {SECRETS_DIR_VARIABLE}={secrets_dir}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False, include_input=False):
            # pydantic prefixes a validator's own message with "Value error, "; the reason is what matters.
            msg = err["msg"].removeprefix("Value error, ")
            if err["loc"]:
                name = "MAILER_" + "_".join(str(part) for part in err["loc"]).upper()
                lines.append(f"  {name}: {msg}")
            else:  # a rule across variables names them itself
                lines.append(f"  {msg}")
        print("mailer: invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts; exit 2 with one line if it cannot be."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address, family=family)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"mailer: cannot listen on {host}:{port} ({reason}); choose another MAILER_PORT or MAILER_HOST",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def new_event_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop's loop (MAILER_UVLOOP, on by default: a fifth less CPU per provider request), else asyncio's."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # a platform without a wheel: asyncio's loop does the same, a little slower
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve(settings: Settings) -> int:
    from aiohttp import web

    from mailer.app import create_app
    from mailer.gc_tuning import collector_ctx
    from mailer.observability.logging import configure_logging
    from mailer.observability.middleware import hide_server_software, quiet_malformed_requests
    from mailer.store.db import DatabaseInUseError

    hide_server_software()
    quiet_malformed_requests()
    # First: a taken port must be said in one line, before migrations run or the engine starts sending.
    listener = bind_listener(settings.host, settings.port)
    configure_logging(settings)
    app = create_app(settings)
    app.cleanup_ctx.append(collector_ctx)
    try:
        web.run_app(
            app,
            loop=new_event_loop(settings.uvloop),
            sock=listener,
            shutdown_timeout=settings.shutdown_grace_s,
            # aiohttp starts this timer when a connection opens and closes the connection if no complete
            # request has arrived when it fires: it bounds both the wait for headers and idle keep-alive.
            keepalive_timeout=settings.header_timeout_s,
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


def report(settings: Settings, send_now: bool, report_date: date | None) -> int:
    """Print the daily report (its plain-text part), or send it now, whatever schedule and report_runs say."""
    import aiosmtplib

    from mailer.domain.clock import utc_now
    from mailer.observability.logging import configure_logging
    from mailer.report.actor import build_report
    from mailer.report.content import build_email, render_text
    from mailer.report.schedule import ReportSchedule, slot_on
    from mailer.report.smtp import send_email
    from mailer.store.db import create_engine

    if send_now and (not settings.report_recipients or not settings.report_sender):
        print(
            "mailer: set MAILER_REPORT_RECIPIENTS and MAILER_REPORT_SENDER to send the report",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)
    schedule = ReportSchedule.from_settings(settings)
    # A date means that day's scheduled report (the 24 hours before its send time); none means "until now".
    now = utc_now()
    until = slot_on(report_date, schedule) if report_date else now
    day = report_date or now.astimezone(schedule.zone).date()

    async def run() -> int:
        db = create_engine(settings.database_url, pool_size=1)
        try:
            content = await build_report(db, settings, day, until)
        finally:
            await db.dispose()
        if not send_now:
            print(render_text(content), end="")
            return 0
        assert settings.report_sender is not None
        message = build_email(content, settings.report_sender, settings.report_recipients, utc_now())
        try:
            await send_email(message, settings)
        except (OSError, TimeoutError, aiosmtplib.SMTPException) as exc:
            print(f"mailer: the report was not sent: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(
            f"mailer: report for {day.isoformat()} sent to {', '.join(settings.report_recipients)}",
            file=sys.stderr,
        )
        return 0

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailer", description="notification mailout service")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (the default)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    sub.add_parser("sandbox", help="run the sandbox provider alone (see --help)", add_help=False)
    report_parser = sub.add_parser("report", help="print the daily report, or send it now")
    report_parser.add_argument("--send-now", action="store_true", help="send it by e-mail now")
    report_parser.add_argument(
        "--date",
        type=date.fromisoformat,
        help="the report of this date (YYYY-MM-DD) instead of the last 24 hours",
    )
    args, rest = parser.parse_known_args(argv)

    if args.command == "sandbox":
        from sandbox.standalone import main as sandbox_main

        return sandbox_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    settings = load_settings()
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "report":
        return report(settings, args.send_now, args.date)
    return serve(settings)
