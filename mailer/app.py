"""The application factory: settings in, a ready-to-run aiohttp application out."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from sqlalchemy import text

from mailer import keys
from mailer.api import auth, problems, system
from mailer.api.engine_port import IdleEngine
from mailer.api.tokens import TokenIssuer
from mailer.domain.ratelimit import SlidingWindowLimiter
from mailer.observability import logging as log_setup
from mailer.observability.db_metrics import watch_pool
from mailer.observability.health import Health
from mailer.observability.middleware import observability_middleware
from mailer.settings import Settings, generate_secret
from mailer.store.db import create_engine, migrate, sqlite_lock_for

log = structlog.get_logger(__name__)

# /readyz must answer quickly even when the database hangs.
DB_CHECK_TIMEOUT_S = 2.0


def create_app(settings: Settings, *, with_engine: bool = True) -> web.Application:
    """Build the application; all I/O (database, engine, provider) happens in its cleanup contexts."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Observability first: it sees every request's final status and binds the request id for the rest.
        middlewares=[observability_middleware, problems.problem_middleware, auth.auth_middleware],
    )
    app[keys.SETTINGS] = settings
    app[keys.HEALTH] = Health()
    app[keys.TOKENS] = _token_issuer(settings)
    app[keys.ENGINE] = IdleEngine()

    app.cleanup_ctx.append(db_ctx)
    if with_engine:
        from mailer.engine.wiring import engine_ctx

        app.cleanup_ctx.append(engine_ctx)
    if settings.report_enabled:
        from mailer.report.scheduler import report_ctx

        app.cleanup_ctx.append(report_ctx)

    system.add_routes(app.router)
    app.router.add_post("/auth/token", auth.token_handler)
    _add_api_routes(app)
    _add_sandbox(app, settings)
    return app


def _add_api_routes(app: web.Application) -> None:
    from mailer.api import customers, docs, imports, mailouts, messages

    customers.add_routes(app.router)
    imports.add_routes(app.router)
    mailouts.add_routes(app.router)
    messages.add_routes(app.router)
    docs.add_routes(app)


def _add_sandbox(app: web.Application, settings: Settings) -> None:
    if settings.provider_url is not None:
        return
    from mailer.provider.sandbox import SandboxFaults, create_sandbox_app

    faults = SandboxFaults(
        latency_ms=settings.sandbox_latency_ms,
        error_rate=settings.sandbox_error_rate,
        throttle_rate=settings.sandbox_throttle_rate,
        garbage_rate=settings.sandbox_garbage_rate,
        hang_rate=settings.sandbox_hang_rate,
    )
    token = settings.sandbox_token or settings.provider_token
    app.add_subapp("/sandbox/v1", create_sandbox_app(faults, token.get_secret_value() if token else None))


def _token_issuer(settings: Settings) -> TokenIssuer:
    if settings.admin_password is None:
        password = generate_secret()
        # Printed, never logged: log files outlive the terminal and travel further.
        print(
            f"mailer: administrator {settings.admin_username!r} has the one-time password {password} "
            "(set MAILER_ADMIN_PASSWORD to choose one)",
            file=sys.stderr,
            flush=True,
        )
        log_setup.register_secret(password)
    else:
        password = settings.admin_password.get_secret_value()
    if settings.jwt_secret is None:
        log.warning("MAILER_JWT_SECRET is unset: tokens are signed with a random per-process secret")
        secret = generate_secret()
        log_setup.register_secret(secret)
    else:
        secret = settings.jwt_secret.get_secret_value()
    return TokenIssuer(
        secret=secret,
        username=settings.admin_username,
        password=password,
        lifetime_s=settings.token_lifetime_s,
        login_limiter=SlidingWindowLimiter(
            settings.login_attempts_per_minute, auth.LOGIN_PERIOD_S, time.monotonic
        ),
    )


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lock (SQLite), migrate, connect; dispose and unlock at shutdown."""
    settings = app[keys.SETTINGS]
    lock = sqlite_lock_for(settings.database_url)
    if lock is not None:
        lock.acquire()
    try:
        await migrate(settings.database_url)
        engine = create_engine(settings.database_url, settings.db_pool_size)
        app[keys.DB] = engine
        app[keys.READ_DB] = engine.execution_options(isolation_level="AUTOCOMMIT")

        async def database_check() -> str | None:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_S), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return None

        app[keys.HEALTH].add_check("database", database_check)
        unwatch_pool = watch_pool(engine)
        try:
            yield
        finally:
            unwatch_pool()
            await engine.dispose()
    finally:
        if lock is not None:
            lock.release()
