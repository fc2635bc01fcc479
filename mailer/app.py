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
from mailer.admin.app import create_admin_app
from mailer.api import auth, idempotency, problems, system
from mailer.domain.ratelimit import LoginThrottle, SlidingWindowLimiter, UsernameBackoff
from mailer.observability import logging as log_setup
from mailer.observability import metrics
from mailer.observability.db_metrics import watch_pool
from mailer.observability.health import Health
from mailer.observability.middleware import observability_middleware, security_headers
from mailer.operations.ports import IdleEngine
from mailer.settings import Settings, generate_secret
from mailer.store.db import create_engine, migrate, sqlite_lock_for
from mailer.tokens import TokenIssuer

log = structlog.get_logger(__name__)

# /readyz must answer quickly even when the database hangs.
DB_CHECK_TIMEOUT_S = 2.0
# Message ids whose deliveries the built-in sandbox counts (oldest forgotten first): about 8 MB at most.
EMBEDDED_SANDBOX_COUNTS = 100_000


def create_app(settings: Settings, *, with_engine: bool = True) -> web.Application:
    """Build the application; all I/O (database, engine, provider) happens in its cleanup contexts."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Observability first: it sees every request's final status and binds the request id for the rest.
        middlewares=[
            observability_middleware,
            problems.problem_middleware,
            auth.auth_middleware,
            # After auth: keys belong to the token's user.
            idempotency.idempotency_middleware(),
        ],
    )
    app[keys.SETTINGS] = settings
    app[keys.HEALTH] = Health()
    app[keys.TOKENS] = _token_issuer(settings)
    app[keys.ENGINE] = IdleEngine()
    app[keys.PROVIDER_TOKEN] = _provider_token(settings)
    app.on_response_prepare.append(security_headers)

    app.cleanup_ctx.append(db_ctx)
    if with_engine:
        from mailer.engine.wiring import engine_ctx

        app.cleanup_ctx.append(engine_ctx)
    if settings.report_enabled:
        from mailer.report.actor import report_ctx

        app.cleanup_ctx.append(report_ctx)

    system.add_routes(app.router)
    app.router.add_post("/auth/token", auth.token_handler)
    _add_api_routes(app)
    app.add_subapp("/admin/", create_admin_app(settings))
    _add_sandbox(app, settings)
    return app


def _add_api_routes(app: web.Application) -> None:
    from mailer.api import audience, customers, docs, imports, mailouts, messages, search

    customers.add_routes(app.router)
    imports.add_routes(app.router)
    mailouts.add_routes(app.router)
    messages.add_routes(app.router)
    audience.add_routes(app.router)
    search.add_routes(app.router)
    docs.add_routes(app)


def _add_sandbox(app: web.Application, settings: Settings) -> None:
    metrics.PROVIDER_SANDBOX.set(1 if settings.provider_url is None else 0)
    if settings.provider_url is not None:
        return
    # Impossible to miss: with no MAILER_PROVIDER_URL nothing reaches a phone, however well it "sends".
    log.warning(
        "the built-in sandbox is the provider: messages are accepted and delivered nowhere; "
        "set MAILER_PROVIDER_URL to the real provider"
    )
    from sandbox.app import create_sandbox_app
    from sandbox.faults import SandboxFaults

    faults = SandboxFaults(
        latency_ms=settings.sandbox_latency_ms,
        error_rate=settings.sandbox_error_rate,
        throttle_rate=settings.sandbox_throttle_rate,
        garbage_rate=settings.sandbox_garbage_rate,
        hang_rate=settings.sandbox_hang_rate,
    )
    # Its send API wants the token the engine sends (never none: see _provider_token); its control routes
    # show every phone and text sent, so inside the service they need the admin's token.
    sandbox = create_sandbox_app(
        faults,
        app[keys.PROVIDER_TOKEN],
        counts_size=EMBEDDED_SANDBOX_COUNTS,
        control_guard=auth.require_token,
    )
    app.add_subapp("/sandbox/v1", sandbox)


def _provider_token(settings: Settings) -> str | None:
    """The one bearer token between the engine and its provider.

    With the built-in sandbox it is also the token the sandbox checks: MAILER_SANDBOX_TOKEN or
    MAILER_PROVIDER_TOKEN when set, else a random per-process one, so that no stranger can send through
    it (and fill its records) while the service itself still can.
    """
    token = settings.provider_token
    if settings.provider_url is not None:
        return token.get_secret_value() if token else None
    token = settings.sandbox_token or token
    if token is not None:
        return token.get_secret_value()
    generated = generate_secret()
    log_setup.register_secret(generated)
    return generated


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
        log.warning(
            "MAILER_JWT_SECRET is unset: tokens are signed with a random per-process secret and will not "
            "survive a restart (nor work on another process); set it to keep them valid"
        )
        secret = generate_secret()
        log_setup.register_secret(secret)
    else:
        secret = settings.jwt_secret.get_secret_value()
    return TokenIssuer(
        secret=secret,
        username=settings.admin_username,
        password=password,
        lifetime_s=settings.token_lifetime_s,
        login_throttle=LoginThrottle(
            SlidingWindowLimiter(settings.login_attempts_per_minute, auth.LOGIN_PERIOD_S, time.monotonic),
            UsernameBackoff(time.monotonic),
            time.monotonic,
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
        db = create_engine(settings.database_url, settings.db_pool_size)
        app[keys.DB] = db
        app[keys.READ_DB] = db.execution_options(isolation_level="AUTOCOMMIT")

        async def database_check() -> str | None:
            async with asyncio.timeout(DB_CHECK_TIMEOUT_S), db.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return None

        app[keys.HEALTH].add_check("database", database_check)
        unwatch_pool = watch_pool(db)
        try:
            yield
        finally:
            unwatch_pool()
            await db.dispose()
    finally:
        if lock is not None:
            lock.release()
