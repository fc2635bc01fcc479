"""The admin web UI's application factory: templates, sign-in (`mailer.admin.auth`), assets and pages."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from mailer.admin import auth
from mailer.admin.pages import add_routes
from mailer.admin.pages.errors import error_middleware
from mailer.admin.pages.format import FILTERS
from mailer.assets import add_package_assets
from mailer.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"


@web.middleware
async def page_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add the request, where it is (for the nav) and the search box's text to every template's context.

    Into the per-request context the sign-in middleware has started (`user`, `csrf_token`): aiohttp_jinja2's
    own context processors would store it under a plain string key, which aiohttp warns about.
    """
    context = request.get(aiohttp_jinja2.REQUEST_CONTEXT_KEY)
    if isinstance(context, dict):
        context.update(request=request, path=request.path, query=request.query.get("q", ""))
    return await handler(request)


def create_admin_app(settings: Settings) -> web.Application:
    """The sub-application mounted at /admin/; it reads the database and engine from its parent."""
    app = web.Application()
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("mailer.admin", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    )
    env.filters.update(FILTERS)
    auth.setup_auth(app, settings)
    # After auth's middlewares: they start the template context, and an error page still gets their headers.
    app.middlewares.append(page_context_middleware)
    app.middlewares.append(error_middleware)
    add_package_assets(app.router, STATIC_PREFIX, STATIC_DIR, name="admin-static")
    add_routes(app.router)
    return app
