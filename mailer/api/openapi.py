"""The OpenAPI 3.0 document of every route: aiohttp-pydantic's generated part, plus what it cannot know.

aiohttp-pydantic documents PydanticViews from their signatures and return annotations. This module adds the
plain handlers (index, health, metrics, login, the docs themselves), the security schemes, the problem+json
error responses every view can give, summaries, examples, and it rewrites the pydantic (JSON Schema 2020-12)
fragments into the OpenAPI 3.0 dialect that Swagger UI 4 and the validators read.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp_pydantic.view import is_pydantic_view

from mailer import __version__
from mailer.api.problems import PROBLEM_CONTENT_TYPE, problem
from mailer.api.schemas.common import INT64_MAX, Problem

JsonObject = dict[str, Any]

OPENAPI_VERSION: Final = "3.0.3"
OAUTH2_SCHEME: Final = "OAuth2PasswordBearer"
BEARER_SCHEME: Final = "BearerToken"
TOKEN_URL: Final = "/auth/token"
API_PREFIX: Final = "/api/"
# Mounted by app.py when no provider URL is configured; a test double, not part of the service's API.
SANDBOX_PREFIX: Final = "/sandbox"
HTTP_METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DESCRIPTION: Final = """\
mailer sends notification mailouts to customers, each within the customer's own local hours, through an
external send provider that may fail.

**Authentication.** Every `/api/*` route needs `Authorization: Bearer <access_token>`. Obtain a token from
`POST /auth/token` with the administrator's username and password (the OAuth2 password grant, or JSON); in
this page, *Authorize* does it for you.

**Conventions.** JSON in and out. Datetimes are RFC 3339 with an offset; output is UTC with `Z`. Errors are
`application/problem+json` (RFC 9457). Lists return `{"items": [...], "next_after": id-or-null}` and take
`limit` and `after`. Unknown body fields are rejected with 422.
"""

# Why each problem status can happen; the wording is shown in Swagger UI next to the status.
PROBLEM_REASONS: Final[dict[int, str]] = {
    400: "malformed JSON or an unreadable body",
    401: "no access token, or one that is invalid or expired",
    404: "no resource has this id",
    409: "the request conflicts with the resource's current state",
    413: "the body is larger than the server accepts",
    415: "the body's content type is not one this operation reads",
    422: "the request is well-formed but not valid; `errors` lists each field",
    429: "too many attempts from this client; see Retry-After",
}

# Responses that have no body by definition (RFC 9110), whatever a view's annotation says.
NO_BODY_STATUSES: Final = frozenset({"204", "304"})

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def build_openapi(app: web.Application) -> JsonObject:
    """Build the document for `app`'s routes; the app's routes must all be registered."""
    # Imported here, not at module level: the generator walks pydantic models and is only wanted on demand.
    from aiohttp_pydantic.oas.view import generate_oas

    doc: JsonObject = generate_oas([app], version_spec=__version__, title_spec="mailer")
    doc["openapi"] = OPENAPI_VERSION
    doc["info"] = {"title": "mailer", "version": __version__, "description": DESCRIPTION}
    paths: JsonObject = doc.setdefault("paths", {})
    components: JsonObject = doc.setdefault("components", {})
    schemas: JsonObject = components.setdefault("schemas", {})

    for path in [p for p in paths if p.startswith(SANDBOX_PREFIX)]:
        del paths[path]
    _add_plain_handlers(app, paths)

    # Harvest pydantic's `examples` before the 3.0 rewrite turns them into a single `example`.
    raw_schemas = copy.deepcopy(schemas)
    _register_model(schemas, Problem)
    schemas.update(copy.deepcopy(HAND_WRITTEN_SCHEMAS))

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

    routes = _route_patterns(app)
    operation_ids: set[str] = set()
    for path, method, operation in _operations(paths):
        _merge(operation, copy.deepcopy(OVERRIDES.get((method, path), {})))
        _complete_operation(path, method, operation, raw_schemas, routes.get(path, {}))
        operation["operationId"] = _unique_id(
            operation.get("operationId") or _operation_id(method, path), operation_ids
        )

    _to_oas30(doc)
    doc["tags"] = [{"name": name, "description": text} for name, text in TAGS.items()]
    return doc


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


# ---------------------------------------------------------------------------------------------------------
# Plain (non-Pydantic) handlers


def _plain_routes(app: web.Application) -> Iterator[tuple[str, str, web.AbstractRoute]]:
    """(path template, lower-case method, route) of every route that aiohttp-pydantic does not document."""
    for resource in app.router.resources():
        if isinstance(resource, (web.StaticResource, web.PrefixedSubAppResource)):
            continue
        path = resource.canonical
        if path.startswith(SANDBOX_PREFIX):
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


def _add_plain_handlers(app: web.Application, paths: JsonObject) -> None:
    hand_written = _hand_written()
    for path, method, route in _plain_routes(app):
        item = paths.setdefault(path, {})
        if method in item:
            continue
        written = hand_written.get((method, path))
        item[method] = written if written is not None else _from_docstring(route)


def _from_docstring(route: web.AbstractRoute) -> JsonObject:
    """A plain handler nobody wrote an operation for: its docstring, and a response it surely can give."""
    operation: JsonObject = {"responses": {"200": {"description": "OK"}}}
    doc = (route.handler.__doc__ or "").strip()
    if doc:
        operation["description"] = doc
    return operation


def _route_patterns(app: web.Application) -> dict[str, dict[str, str]]:
    """{path template: {parameter: its regex}} for routes declared like `/things/{id:\\d+}`."""
    out: dict[str, dict[str, str]] = {}
    for resource in app.router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        formatter = info.get("formatter")
        if isinstance(pattern, re.Pattern) and isinstance(formatter, str):
            out[formatter] = _group_regexes(pattern.pattern)
    return out


def _group_regexes(pattern: str) -> dict[str, str]:
    """Named groups of a route regex with their bodies, allowing nested parentheses."""
    groups: dict[str, str] = {}
    for match in re.finditer(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>", pattern):
        depth, start = 1, match.end()
        i = start
        while i < len(pattern) and depth:
            if pattern[i] == "\\":
                i += 2
                continue
            depth += {"(": 1, ")": -1}.get(pattern[i], 0)
            i += 1
        groups[match.group(1)] = pattern[start : i - 1]
    return groups


# ---------------------------------------------------------------------------------------------------------
# Completing each operation


def _complete_operation(
    path: str, method: str, op: JsonObject, raw_schemas: JsonObject, regexes: dict[str, str]
) -> None:
    protected = path.startswith(API_PREFIX)
    _summarise(path, method, op)
    op.setdefault("tags", [_tag_for(path)])
    if not op["tags"]:
        op["tags"] = [_tag_for(path)]
    _complete_path_parameters(path, op, regexes)

    body = op.get("requestBody")
    if body is not None:
        body.setdefault("required", True)
        for media in body.get("content", {}).values():
            _example_from_schema(media, raw_schemas)

    for param in op.get("parameters", []):
        if param.get("in") != "path" and not param.get("required"):
            # An optional parameter is null by being absent: a query string cannot carry a JSON null.
            _drop_nullable(param.get("schema", {}))

    responses: JsonObject = op.setdefault("responses", {})
    for status, response in responses.items():
        if not response.get("description"):
            response["description"] = _phrase(status)
        if status in NO_BODY_STATUSES:
            response.pop("content", None)
        elif status.isdigit() and int(status) >= 400:
            _as_problem(int(status), response)
        for media in response.get("content", {}).values():
            _example_from_schema(media, raw_schemas)

    if protected:
        op["security"] = [{OAUTH2_SCHEME: []}, {BEARER_SCHEME: []}]
        statuses = {401}
        if body is not None:
            statuses |= {400, 413, 422}
            if any(not media_type.endswith("json") for media_type in body.get("content", {})):
                statuses.add(415)
        if any(p.get("in") == "query" for p in op.get("parameters", [])):
            statuses.add(422)
        if _PATH_PARAM.search(path):
            statuses.add(404)
        if method != "get":
            statuses.add(409)
        for code in sorted(statuses):
            responses.setdefault(str(code), problem_response(code))
    # Every operation needs at least one example; the problem responses above provide one for /api routes.


def _as_problem(status: int, response: JsonObject) -> None:
    """Views annotate errors as `rNNN[Problem]`, which aiohttp-pydantic files under application/json; the
    problem middleware really answers application/problem+json."""
    content: JsonObject = response.get("content") or {}
    schemas = [media.get("schema", {}).get("$ref", "") for media in content.values()]
    if not content or all(ref.endswith("/Problem") for ref in schemas):
        response["content"] = problem_response(status, response.get("description"))["content"]


def _drop_nullable(schema: JsonObject) -> None:
    if not schema.pop("nullable", False):
        return
    if schema.get("enum") == [None]:
        schema.pop("enum")
    alternatives = schema.get("allOf")
    if isinstance(alternatives, list) and len(alternatives) == 1 and not schema.get("default"):
        schema.update(schema.pop("allOf")[0])


def _summarise(path: str, method: str, op: JsonObject) -> None:
    text = str(op.get("description") or "").strip()
    lines = text.splitlines()
    first = lines[0].strip() if lines else ""
    # Handler docstrings often start with "GET /path: what it does"; the method and path are shown anyway.
    first = re.sub(r"^[A-Z]+(?:,\s*[A-Z]+)*\s+/\S*:\s*", "", first)
    if not op.get("summary"):
        op["summary"] = first.rstrip(".") or f"{method.upper()} {path}"
    rest = "\n".join(lines[1:]).strip()
    op["description"] = rest or first or op["summary"]


def _tag_for(path: str) -> str:
    if path.startswith(API_PREFIX):
        return path[len(API_PREFIX) :].split("/", 1)[0] or "api"
    if path.startswith("/auth"):
        return "auth"
    if path.startswith(("/docs", "/openapi")):
        return "docs"
    return "system"


def _complete_path_parameters(path: str, op: JsonObject, regexes: dict[str, str]) -> None:
    params: list[JsonObject] = op.setdefault("parameters", [])
    declared = {p.get("name") for p in params if p.get("in") == "path"}
    for name in _PATH_PARAM.findall(path):
        if name in declared:
            continue
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": f"the {name} named by the path",
                "schema": _path_schema(regexes.get(name)),
            }
        )
    if not params:
        del op["parameters"]


def _path_schema(regex: str | None) -> JsonObject:
    if regex is not None and regex in (r"\d+", "[0-9]+"):
        # Ids are int64 in the database: a larger number names nothing.
        return {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
    schema: JsonObject = {"type": "string"}
    if regex is not None and regex != "[^{}/]+":
        schema["pattern"] = f"^(?:{regex})$"
    return schema


def _example_from_schema(media: JsonObject, raw_schemas: JsonObject) -> None:
    """Copy a model's `json_schema_extra` examples onto the media type, where Swagger UI shows them."""
    if "example" in media or "examples" in media:
        return
    schema = media.get("schema") or {}
    ref = schema.get("$ref")
    examples: Any = None
    if isinstance(ref, str):
        examples = raw_schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
    elif schema.get("type") == "array" and isinstance(schema.get("items", {}).get("$ref"), str):
        item_examples = raw_schemas.get(schema["items"]["$ref"].rsplit("/", 1)[-1], {}).get("examples")
        if isinstance(item_examples, list) and item_examples:
            examples = [item_examples]
    if isinstance(examples, list) and examples:
        if len(examples) == 1:
            media["example"] = examples[0]
        else:
            media["examples"] = {f"example{i + 1}": {"value": value} for i, value in enumerate(examples)}


def _phrase(status: str) -> str:
    try:
        return HTTPStatus(int(status)).phrase
    except ValueError:
        return "Any other status"


def problem_example(status: int, detail: str | None = None) -> JsonObject:
    """The body the service really sends for `status`, built by the same function that sends it."""
    response = problem(status, detail or PROBLEM_REASONS.get(status, _phrase(str(status))))
    assert response.text is not None
    body: JsonObject = json.loads(response.text)
    if status == 422:
        body["errors"] = [{"loc": ["body", "start_at"], "msg": "Field required"}]
    return body


def problem_response(status: int, description: str | None = None) -> JsonObject:
    response: JsonObject = {
        "description": description or PROBLEM_REASONS.get(status, _phrase(str(status))),
        "content": {
            PROBLEM_CONTENT_TYPE: {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": problem_example(status, description),
            }
        },
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"description": "always `Bearer`", "schema": {"type": "string"}}
        }
    if status == 429:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    return response


def _operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    return f"{method}_{slug}"


def _unique_id(candidate: str, taken: set[str]) -> str:
    result, n = candidate, 1
    while result in taken:
        n += 1
        result = f"{candidate}_{n}"
    taken.add(result)
    return result


def _register_model(schemas: JsonObject, model: type[Problem]) -> None:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


# ---------------------------------------------------------------------------------------------------------
# JSON Schema 2020-12 (pydantic) → OpenAPI 3.0 schema objects


def _to_oas30(doc: JsonObject) -> None:
    for schema in doc.get("components", {}).get("schemas", {}).values():
        _convert_schema(schema)
    for _, _, op in _operations(doc.get("paths", {})):
        for param in op.get("parameters", []):
            if isinstance(param.get("schema"), dict):
                _convert_schema(param["schema"])
        for owner in [op.get("requestBody", {}), *op.get("responses", {}).values()]:
            for media in owner.get("content", {}).values():
                if isinstance(media.get("schema"), dict):
                    _convert_schema(media["schema"])


_SUBSCHEMA_LISTS: Final = ("anyOf", "oneOf", "allOf")
_SUBSCHEMA: Final = ("items", "not", "additionalProperties")


def _convert_schema(schema: JsonObject) -> None:
    for key in _SUBSCHEMA_LISTS:
        for sub in schema.get(key, []):
            _convert_schema(sub)
    for key in _SUBSCHEMA:
        if isinstance(schema.get(key), dict):
            _convert_schema(schema[key])
    for sub in schema.get("properties", {}).values():
        _convert_schema(sub)

    for key in _SUBSCHEMA_LISTS:
        alternatives = schema.get(key)
        if not isinstance(alternatives, list):
            continue
        kept = [s for s in alternatives if s.get("type") != "null"]
        if len(kept) != len(alternatives):
            schema["nullable"] = True
            if len(kept) == 1 and key != "allOf":
                del schema[key]
                only = kept[0]
                # A lone $ref cannot carry siblings in 3.0; allOf can.
                schema.update({"allOf": [only]} if "$ref" in only else only)
            else:
                schema[key] = kept
    if schema.get("type") == "null":
        del schema["type"]
        schema["nullable"] = True
        schema["enum"] = [None]
    if isinstance(schema.get("type"), list):
        types = [t for t in schema["type"] if t != "null"]
        if len(types) != len(schema["type"]):
            schema["nullable"] = True
        if len(types) == 1:
            schema["type"] = types[0]
        else:
            del schema["type"]
            schema["anyOf"] = [{"type": t} for t in types]
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if "examples" in schema:
        examples = schema.pop("examples")
        if isinstance(examples, list) and examples:
            schema.setdefault("example", examples[0])
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(bound)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            schema[flag] = value
            schema[bound] = True
    if "$ref" in schema and len(schema) > 1:
        schema["allOf"] = [{"$ref": schema.pop("$ref")}]
    for key in (
        "$schema",
        "$id",
        "prefixItems",
        "contentMediaType",
        "contentEncoding",
        "unevaluatedProperties",
    ):
        schema.pop(key, None)
    if "default" in schema and schema["default"] is None and not schema.get("nullable"):
        del schema["default"]


# ---------------------------------------------------------------------------------------------------------
# Hand-written operations for the plain handlers

TAGS: Final[dict[str, str]] = {
    "auth": "Access tokens for the API.",
    "customers": "The people messages go to.",
    "mailouts": "A text sent to every matching customer between a start and an end.",
    "messages": "One mailout's message to one customer, with its attempts.",
    "system": "What the service is, whether it is alive and ready, its metrics.",
    "docs": "This documentation.",
}

HAND_WRITTEN_SCHEMAS: Final[JsonObject] = {
    "Token": {
        "type": "object",
        "title": "Token",
        "required": ["access_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string", "description": "a JWT; send it as `Authorization: Bearer …`"},
            "token_type": {"type": "string", "enum": ["bearer"]},
            "expires_in": {"type": "integer", "description": "seconds until the token expires"},
        },
    },
    "TokenForm": {
        "type": "object",
        "title": "TokenForm",
        "required": ["username", "password"],
        "properties": {
            "grant_type": {
                "type": "string",
                "enum": ["password"],
                "description": "OAuth2: always `password`",
            },
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
        },
    },
    "TokenJson": {
        "type": "object",
        "title": "TokenJson",
        "required": ["username", "password"],
        "properties": {
            "username": {"type": "string"},
            "password": {"type": "string", "format": "password"},
        },
    },
}


def _json(schema: JsonObject, example: Any, description: str = "OK") -> JsonObject:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": example}},
    }


_TOKEN_EXAMPLE: Final = {
    "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl",
    "token_type": "bearer",
    "expires_in": 3600,
}
_LOGIN_EXAMPLE: Final = {"username": "admin", "password": "s3cret"}

_READY_SCHEMA: Final[JsonObject] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "checks": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "each component: `ok` or the reason it is not; alarms appear as `alarm:NAME`",
        },
    },
}


def _hand_written() -> dict[tuple[str, str], JsonObject]:
    """Operations of the plain handlers; a function, so nothing is built at import."""
    return {
        ("get", "/"): {
            "summary": "What this service is",
            "description": "The service's name, its version and links to the main routes.",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["service", "version", "links"],
                        "properties": {
                            "service": {"type": "string"},
                            "version": {"type": "string"},
                            "links": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                    {
                        "service": "mailer",
                        "version": __version__,
                        "links": {"docs": "/docs/", "openapi": "/openapi.json", "token": "/auth/token"},
                    },
                )
            },
        },
        ("get", "/healthz"): {
            "summary": "Liveness",
            "description": "200 while the process lives; it checks nothing else.",
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                    {"status": "ok"},
                )
            },
        },
        ("get", "/readyz"): {
            "summary": "Readiness",
            "description": "200 when the database answers and every actor runs, else 503 with the reasons.",
            "responses": {
                "200": _json(_READY_SCHEMA, {"status": "ready", "checks": {"database": "ok"}}, "ready"),
                "503": _json(
                    _READY_SCHEMA,
                    {"status": "unavailable", "checks": {"database": "TimeoutError: "}},
                    "not ready: a check failed",
                ),
            },
        },
        ("get", "/metrics"): {
            "summary": "Prometheus metrics",
            "description": "Every metric of the process in the Prometheus text exposition format.",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "text/plain": {
                            "schema": {"type": "string"},
                            "example": "# HELP mailer_messages_sent_total Messages the provider accepted.\n"
                            "# TYPE mailer_messages_sent_total counter\nmailer_messages_sent_total 42.0\n",
                        }
                    },
                }
            },
        },
        ("post", "/auth/token"): {
            "summary": "Obtain an access token",
            "description": (
                "Exchange the administrator's username and password for a bearer token: either the OAuth2 "
                "password grant (a form, as Swagger UI's *Authorize* sends it) or a JSON object. "
                "Failed attempts are rate limited per client."
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"$ref": "#/components/schemas/TokenForm"},
                        "example": {"grant_type": "password", **_LOGIN_EXAMPLE},
                    },
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/TokenJson"},
                        "example": _LOGIN_EXAMPLE,
                    },
                },
            },
            "responses": {
                "200": {
                    "description": "the token; `Cache-Control: no-store`",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/Token"},
                            "example": _TOKEN_EXAMPLE,
                        }
                    },
                },
                "400": problem_response(400),
                "401": problem_response(401),
                "413": problem_response(413),
                "422": problem_response(422),
                "429": problem_response(429),
            },
        },
        ("get", "/openapi.json"): {
            "summary": "This OpenAPI document",
            "description": "The OpenAPI 3.0 document of every route, as JSON.",
            "responses": {
                "200": _json(
                    {"type": "object", "additionalProperties": True},
                    {
                        "openapi": OPENAPI_VERSION,
                        "info": {"title": "mailer", "version": __version__},
                        "paths": {},
                    },
                )
            },
        },
        ("get", "/docs/"): {
            "summary": "Swagger UI",
            "description": "An interactive page for this API; every asset is served by this process.",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"text/html": {"schema": {"type": "string"}, "example": "<!DOCTYPE html>…"}},
                }
            },
        },
        ("get", "/docs"): {
            "summary": "Swagger UI (redirect)",
            "description": "Redirects to `/docs/`, where relative asset links resolve.",
            "responses": {
                "301": {
                    "description": "Moved Permanently",
                    "headers": {"Location": {"schema": {"type": "string"}, "example": "/docs/"}},
                    "content": {
                        "text/plain": {"schema": {"type": "string"}, "example": "301: Moved Permanently"}
                    },
                }
            },
        },
    }


# What aiohttp-pydantic cannot see in a view's signature: the import reads its body itself, as text.
_IMPORT_ROW_SCHEMA: Final[JsonObject] = {"type": "string", "description": "the whole body, UTF-8"}
OVERRIDES: Final[dict[tuple[str, str], JsonObject]] = {
    ("post", "/api/customers/import"): {
        "requestBody": {
            "required": True,
            "description": "NDJSON, one customer object per line, or CSV with a header row.",
            "content": {
                "application/x-ndjson": {
                    "schema": _IMPORT_ROW_SCHEMA,
                    "example": '{"phone": "79001234567", "tag": "vip", "timezone": "Europe/Moscow"}\n'
                    '{"phone": 79007654321}\n',
                },
                "text/csv": {
                    "schema": _IMPORT_ROW_SCHEMA,
                    "example": "phone,tag,timezone\n79001234567,vip,Europe/Moscow\n79007654321,,\n",
                },
            },
        }
    },
}
