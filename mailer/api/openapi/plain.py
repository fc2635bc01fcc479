"""The plain handlers aiohttp-pydantic cannot see (login, metrics, docs): their operations, from models."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import hdrs, web
from aiohttp_pydantic.view import is_pydantic_view
from pydantic import BaseModel

from mailer.api.openapi.problems import problem_response
from mailer.api.openapi.texts import OPENAPI_VERSION, TOKEN_URL, UNDOCUMENTED_PREFIXES, JsonObject
from mailer.schemas.system import Token, TokenForm, TokenJson


def _plain_routes(app: web.Application) -> Iterator[tuple[str, str, web.AbstractRoute]]:
    """(path template, lower-case method, route) of every route that aiohttp-pydantic does not document."""
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            continue
        path = resource.canonical
        if path.startswith(UNDOCUMENTED_PREFIXES) or _is_asset_route(path):
            continue
        for route in resource:
            if route.method == hdrs.METH_HEAD or is_pydantic_view(route.handler):
                continue
            if route.method == hdrs.METH_ANY:
                # A plain class-based view: one operation per method it defines.
                for method in hdrs.METH_ALL - {hdrs.METH_HEAD, hdrs.METH_OPTIONS}:
                    if hasattr(route.handler, method.lower()):
                        yield path, method.lower(), route
            else:
                yield path, route.method.lower(), route


def _is_asset_route(path: str) -> bool:
    # Files served by mailer.assets (`{prefix}/{path}`): Swagger UI's and the admin UI's, not API operations.
    return path.endswith("/{path}")


def add_plain_handlers(app: web.Application, paths: JsonObject) -> None:
    operations = _plain_operations()
    for path, method, route in _plain_routes(app):
        item = paths.setdefault(path, {})
        if method in item:
            continue
        written = operations.get((method, path))
        item[method] = written if written is not None else _from_docstring(route)


def _from_docstring(route: web.AbstractRoute) -> JsonObject:
    """A plain handler nobody described: its docstring, and a response it surely can give."""
    operation: JsonObject = {"responses": {"200": {"description": "OK"}}}
    doc = (route.handler.__doc__ or "").strip()
    if doc:
        operation["description"] = doc
    return operation


def _model_media(model: type[BaseModel]) -> JsonObject:
    return {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}


def _text(media_type: str, example: str, description: str = "OK") -> JsonObject:
    return {
        "description": description,
        "content": {media_type: {"schema": {"type": "string"}, "example": example}},
    }


def _plain_operations() -> dict[tuple[str, str], JsonObject]:
    """The operations of the plain handlers; their bodies are the pydantic models above."""
    return {
        ("post", TOKEN_URL): {
            "summary": "Obtain an access token",
            "description": (
                "Exchange the administrator's username and password for a bearer token: either the OAuth2 "
                "password grant (a form, as Swagger UI's *Authorize* sends it) or a JSON object. Failed "
                "attempts are rate limited per client and per username."
            ),
            "tags": ["auth"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": _model_media(TokenForm),
                    "application/json": _model_media(TokenJson),
                },
            },
            "responses": {
                "200": {
                    "description": "the token; `Cache-Control: no-store`",
                    "content": {"application/json": _model_media(Token)},
                },
                **{str(code): problem_response(code) for code in (400, 401, 413, 415, 422, 429)},
            },
        },
        ("get", "/metrics"): {
            "summary": "Prometheus metrics",
            "description": "Every metric of the process in the Prometheus text exposition format.",
            "tags": ["system"],
            "responses": {
                "200": _text(
                    "text/plain",
                    "# HELP mailer_provider_sandbox 1 while the built-in sandbox is the provider.\n"
                    "# TYPE mailer_provider_sandbox gauge\nmailer_provider_sandbox 1.0\n",
                )
            },
        },
        ("get", "/openapi.json"): {
            "summary": "This OpenAPI document",
            "description": "The OpenAPI 3.1 document of every route, as JSON.",
            "tags": ["docs"],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object"},
                            "example": {"openapi": OPENAPI_VERSION, "info": {"title": "mailer"}, "paths": {}},
                        }
                    },
                }
            },
        },
        ("get", "/docs/"): {
            "summary": "Swagger UI",
            "description": "An interactive page for this API; every asset is served by this process.",
            "tags": ["docs"],
            "responses": {"200": _text("text/html", "<!DOCTYPE html>…")},
        },
        ("get", "/docs"): {
            "summary": "Swagger UI (redirect)",
            "description": "Redirects to `/docs/`, where relative asset links resolve.",
            "tags": ["docs"],
            "responses": {
                "301": {
                    **_text("text/plain", "301: Moved Permanently", "Moved Permanently"),
                    "headers": {"Location": {"schema": {"type": "string", "const": "/docs/"}}},
                }
            },
        },
    }
