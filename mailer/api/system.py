"""Service routes outside /api: index, liveness, readiness, metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from mailer import __version__, keys


async def index(request: web.Request) -> web.Response:
    """GET /: what this is and where to go."""
    return web.json_response(
        {
            "service": "mailer",
            "version": __version__,
            "links": {
                "docs": "/docs/",
                "openapi": "/openapi.json",
                "token": "/auth/token",
                "customers": "/api/customers/",
                "mailouts": "/api/mailouts/",
                "stats": "/api/mailouts/stats",
                "health": "/healthz",
                "ready": "/readyz",
                "metrics": "/metrics",
            },
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the process lives."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when the database answers and every actor runs, else 503 with the reasons."""
    ready, detail = await request.app[keys.HEALTH].report()
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": detail}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", index)
    router.add_get("/healthz", healthz)
    router.add_get("/readyz", readyz)
    router.add_get("/metrics", metrics)
