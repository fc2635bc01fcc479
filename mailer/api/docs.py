"""The API's documentation: `/openapi.json`, and a Swagger UI at `/docs/` that needs no internet access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from aiohttp import web

from mailer.api.openapi.document import build_openapi
from mailer.assets import add_package_assets

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs/"
# Swagger UI 5's own files, straight from the swagger-ui-py package; nothing third-party is copied here.
SWAGGER_STATIC_PATH: Final = "/docs/static"
# Our own small files (the script that starts Swagger UI, since the page may run no inline script).
OWN_STATIC_PATH: Final = "/docs/mailer"
OWN_STATIC_DIR: Final = Path(__file__).parent / "static"

# Swagger UI 5 works under this (tests/test_docs_ui.py signs in, runs a request and counts violations in
# chromium): scripts and styles only from our own files, no inline script, no eval; images include data: URIs
# (its icons are SVG inlined in the stylesheet). Nothing may frame the page: a framed "Authorize" dialog is a
# clickjacking target.
DOCS_CSP: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
DOCS_HEADERS: Final = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is tiny and changes with the service's version; never serve a stale one after an upgrade.
    "Cache-Control": "no-cache",
}

# Asset URLs are relative to /docs/ (the page redirects there), so a path prefix added by a proxy still works.
INDEX_HTML: Final = """\
<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>mailer API</title>
    <link rel="stylesheet" type="text/css" href="static/swagger-ui.css">
    <link rel="stylesheet" type="text/css" href="static/index.css">
    <link rel="icon" type="image/png" href="static/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="static/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="static/swagger-ui-bundle.js" charset="utf-8"></script>
    <script src="mailer/swagger-init.js" charset="utf-8"></script>
  </body>
</html>
"""


def swagger_ui_dir() -> Path:
    """Where swagger-ui-py keeps Swagger UI's built files."""
    from swagger_ui.utils import SWAGGER_UI_PY_ROOT

    return Path(SWAGGER_UI_PY_ROOT) / "static"


class _OpenApiDocument:
    """Builds the document on first request, once: routes do not change after the app starts."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._body: bytes | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self._body is None:
            self._body = json.dumps(build_openapi(self._app), separators=(",", ":")).encode()
        return web.Response(body=self._body, content_type="application/json")


async def docs_index(request: web.Request) -> web.Response:
    """GET /docs/: Swagger UI."""
    return web.Response(text=INDEX_HTML, content_type="text/html", headers=DOCS_HEADERS)


async def docs_redirect(request: web.Request) -> web.StreamResponse:
    """GET /docs: redirect to /docs/, where the page's relative links resolve."""
    raise web.HTTPMovedPermanently(DOCS_PATH, headers=DOCS_HEADERS)


def add_routes(app: web.Application) -> None:
    """Register the documentation routes; call it after every other route (the document covers them all)."""
    document = _OpenApiDocument(app)
    app.router.add_get(OPENAPI_PATH, document.handle, name="openapi")
    app.router.add_get(DOCS_PATH, docs_index, name="docs")
    app.router.add_get(DOCS_PATH.rstrip("/"), docs_redirect)
    add_package_assets(app.router, SWAGGER_STATIC_PATH, swagger_ui_dir(), name="swagger-ui")
    # Our own script changes with each release of the service: revalidate it on every load.
    add_package_assets(app.router, OWN_STATIC_PATH, OWN_STATIC_DIR, name="docs-static", max_age_s=0)
