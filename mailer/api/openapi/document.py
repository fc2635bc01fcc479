"""build_openapi: the document of every route, aiohttp-pydantic's generated part completed."""

from __future__ import annotations

import copy
from collections.abc import Iterator

from aiohttp import web
from pydantic import BaseModel

from mailer import __version__
from mailer.api.openapi.operations import complete_operation, operation_id, route_patterns, unique_id
from mailer.api.openapi.plain import add_plain_handlers
from mailer.api.openapi.texts import (
    BEARER_SCHEME,
    DESCRIPTION,
    HTTP_METHODS,
    OAUTH2_SCHEME,
    OPENAPI_VERSION,
    OVERRIDES,
    TAGS,
    TOKEN_URL,
    UNDOCUMENTED_PREFIXES,
    JsonObject,
)
from mailer.schemas.common import Problem
from mailer.schemas.system import Token, TokenForm, TokenJson


def build_openapi(app: web.Application) -> JsonObject:
    """Build the document for `app`'s routes; the app's routes must all be registered."""
    doc = _generated(app)
    doc["openapi"] = OPENAPI_VERSION
    doc["info"] = {"title": "mailer", "version": __version__, "description": DESCRIPTION}
    paths: JsonObject = doc.setdefault("paths", {})
    components: JsonObject = doc.setdefault("components", {})
    schemas: JsonObject = components.setdefault("schemas", {})

    for path in [p for p in paths if p.startswith(UNDOCUMENTED_PREFIXES)]:
        del paths[path]
    for model in (Problem, Token, TokenForm, TokenJson):
        _register_model(schemas, model)
    add_plain_handlers(app, paths)

    components["securitySchemes"] = {
        OAUTH2_SCHEME: {
            "type": "oauth2",
            "description": "The administrator's username and password, exchanged at /auth/token.",
            "flows": {"password": {"tokenUrl": TOKEN_URL, "scopes": {}}},
        },
        BEARER_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access_token from POST /auth/token.",
        },
    }

    routes = route_patterns(app)
    operation_ids: set[str] = set()
    for path, method, operation in _operations(paths):
        _merge(operation, copy.deepcopy(OVERRIDES.get((method, path), {})))
        complete_operation(path, method, operation, schemas, routes.get(path, {}))
        operation["operationId"] = unique_id(
            operation.get("operationId") or operation_id(method, path), operation_ids
        )
    doc["tags"] = [{"name": name, "description": text} for name, text in TAGS.items()]
    return doc


def _generated(app: web.Application) -> JsonObject:
    # Imported here, not at module level: the generator walks pydantic models and is only wanted on demand.
    from aiohttp_pydantic.oas import pydantic_schema_to_oas
    from aiohttp_pydantic.oas.view import generate_oas

    # aiohttp-pydantic starts every document as 3.0 and rewrites pydantic's `anyOf: [..., null]` into 3.0's
    # `nullable` for it; for 3.1 the schemas stay exactly as pydantic writes them.
    pydantic_schema_to_oas.add_or_replace_translater("3.0.0", _as_pydantic_wrote_it)
    doc: JsonObject = generate_oas([app], version_spec=__version__, title_spec="mailer")
    return doc


def _as_pydantic_wrote_it(schema: JsonObject) -> None:
    """The "translation" for OpenAPI 3.1: none."""


def _merge(target: JsonObject, extra: JsonObject) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _operations(paths: JsonObject) -> Iterator[tuple[str, str, JsonObject]]:
    for path, item in paths.items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def _register_model(schemas: JsonObject, model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
