"""The API's documentation: `/openapi.json`, and a Swagger UI at `/docs/` that needs no internet access."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from mailer.api.openapi import build_openapi

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs/"
# Swagger UI's own files, straight from the swagger-ui-bundle package; nothing third-party is copied here.
SWAGGER_STATIC_PATH: Final = "/docs/static"
# Our own small files (the script that starts Swagger UI).
OWN_STATIC_PATH: Final = "/docs/mailer"
OWN_STATIC_DIR: Final = Path(__file__).parent / "static"

# Asset URLs are relative to /docs/ (the page redirects there), so a path prefix added by a proxy still works.
INDEX_HTML: Final = """\
<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>mailer API</title>
    <link rel="stylesheet" type="text/css" href="static/swagger-ui.css">
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
    return web.Response(text=INDEX_HTML, content_type="text/html")


async def docs_redirect(request: web.Request) -> web.StreamResponse:
    """GET /docs: redirect to /docs/, where the page's relative links resolve."""
    raise web.HTTPMovedPermanently(DOCS_PATH)


def add_routes(app: web.Application) -> None:
    """Register the documentation routes; call it after every other route (the document covers them all)."""
    document = _OpenApiDocument(app)
    app.router.add_get(OPENAPI_PATH, document.handle, name="openapi")
    app.router.add_get(DOCS_PATH, docs_index, name="docs")
    app.router.add_get(DOCS_PATH.rstrip("/"), docs_redirect)
    app.router.add_static(SWAGGER_STATIC_PATH, Path(str(swagger_ui_path)), name="swagger-ui")
    app.router.add_static(OWN_STATIC_PATH, OWN_STATIC_DIR, name="docs-static")
