"""The engine's cleanup context: provider session and client, engine start, graceful stop."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from sqlalchemy.engine import make_url

from mailer import keys
from mailer.engine.engine import Engine, EngineConfig
from mailer.provider.client import ProviderClient, provider_session
from mailer.settings import Settings
from mailer.store.db import create_record_engine
from mailer.store.dispatch import DispatchStore

# Addresses a server listens on but a client cannot send to: the built-in sandbox is reached on loopback.
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def provider_base_url(settings: Settings) -> str:
    """`provider_url`, or the sandbox mounted in this very app."""
    if settings.provider_url:
        return settings.provider_url
    host = "127.0.0.1" if settings.host in _WILDCARD_HOSTS else settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/sandbox/v1"


def listen_dsn(settings: Settings) -> str | None:
    """A plain asyncpg DSN for the LISTEN connection; None on SQLite (one process, nothing to hear)."""
    if settings.is_sqlite:
        return None
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the sending engine for the life of the app; at shutdown, drain within `shutdown_grace_s`."""
    settings = app[keys.SETTINGS]
    # Decided once by the app factory: with the built-in sandbox it is the token the sandbox checks.
    token = app[keys.PROVIDER_TOKEN]
    record_db = create_record_engine(settings.database_url)
    async with provider_session(settings.send_concurrency) as session:
        client = ProviderClient(session, provider_base_url(settings), token)
        engine = Engine(
            DispatchStore(app[keys.DB], record_db),
            client,
            EngineConfig.from_settings(settings),
            app[keys.HEALTH],
            pg_dsn=listen_dsn(settings),
        )
        await engine.start()
        app[keys.ENGINE] = engine
        try:
            yield
        finally:
            await engine.stop()
            if record_db is not None:
                await record_db.dispose()
