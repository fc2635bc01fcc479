"""Typed application keys: every piece of shared state on the aiohttp app, in one place."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.observability.health import Health
from mailer.operations.ports import EnginePort
from mailer.settings import Settings
from mailer.tokens import TokenIssuer

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", AsyncEngine)
# The same pool in autocommit mode, for reads: no BEGIN/ROLLBACK round trips around a SELECT.
READ_DB = web.AppKey("read_db", AsyncEngine)
TOKENS = web.AppKey("tokens", TokenIssuer)
ENGINE: web.AppKey[EnginePort] = web.AppKey("engine")
HEALTH = web.AppKey("health", Health)
# The bearer token the engine sends to the provider; with the built-in sandbox, the one it checks too.
PROVIDER_TOKEN: web.AppKey[str | None] = web.AppKey("provider_token")
