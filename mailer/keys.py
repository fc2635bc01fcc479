"""Typed application keys: every piece of shared state on the aiohttp app, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.settings import Settings

if TYPE_CHECKING:
    from mailer.api.auth import TokenIssuer
    from mailer.api.engine_port import EnginePort
    from mailer.observability.health import Health

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", AsyncEngine)
TOKENS = web.AppKey("tokens", "TokenIssuer")
ENGINE = web.AppKey("engine", "EnginePort")
HEALTH = web.AppKey("health", "Health")
