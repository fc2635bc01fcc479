"""Service routes outside /api: index, liveness, readiness (typed views, so their schemas are generated),
and metrics."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_pydantic.oas.typing import r200, r503
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from mailer import __version__, keys
from mailer.api.views import ApiView, json_model
from mailer.schemas.system import HealthOut, IndexOut, ReadyOut
from mailer.settings import Settings

SANDBOX_PROVIDER = "sandbox"
LINKS = {
    "docs": "/docs/",
    "openapi": "/openapi.json",
    "token": "/auth/token",
    "customers": "/api/customers/",
    "mailouts": "/api/mailouts/",
    "stats": "/api/mailouts/stats",
    "health": "/healthz",
    "ready": "/readyz",
    "metrics": "/metrics",
}


def provider_name(settings: Settings) -> str:
    """`sandbox` for the built-in provider, else the provider URL's host: never a path, a user or a token."""
    if settings.provider_url is None:
        return SANDBOX_PROVIDER
    return urlsplit(settings.provider_url).hostname or "unknown"


class IndexView(ApiView):
    """GET /."""

    async def get(self) -> r200[IndexOut]:
        """What this service is.

        The service's name, its version, the provider it sends through (`sandbox` for the built-in one,
        which sends nothing anywhere) and links to the main routes.

        Tags: system
        """
        body = IndexOut(
            service="mailer", version=__version__, provider=provider_name(self.settings), links=LINKS
        )
        return json_model(body)


class HealthView(ApiView):
    """GET /healthz."""

    async def get(self) -> r200[HealthOut]:
        """Liveness.

        200 while the process lives; it checks nothing else.

        Tags: system
        """
        return json_model(HealthOut(status="ok"))


class ReadyView(ApiView):
    """GET /readyz."""

    async def get(self) -> r200[ReadyOut] | r503[ReadyOut]:
        """Readiness.

        200 when the database answers and every actor runs, else 503 with the failed checks. `provider`
        says where messages go (`sandbox`: nowhere).

        Tags: system
        """
        ready, detail = await self.app[keys.HEALTH].report()
        body = ReadyOut(
            status="ready" if ready else "unavailable", provider=provider_name(self.settings), checks=detail
        )
        return json_model(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_view("/", IndexView)
    router.add_view("/healthz", HealthView)
    router.add_view("/readyz", ReadyView)
    router.add_get("/metrics", metrics)
