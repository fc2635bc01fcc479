"""Completing each operation: summary, tag, path parameters, examples, problems, security, rules, aliases."""

from __future__ import annotations

import copy
import re
from typing import Any

from aiohttp import web

from mailer.api import idempotency
from mailer.api.openapi.problems import as_problem, phrase, problem_response
from mailer.api.openapi.texts import (
    ALIASES,
    API_PREFIX,
    BEARER_SCHEME,
    IDEMPOTENCY_PARAMETER,
    NO_BODY_STATUSES,
    OAUTH2_SCHEME,
    RULES,
    RULES_HEADING,
    STATISTICS_TAG,
    JsonObject,
)
from mailer.schemas.common import INT64_MAX

_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def complete_operation(
    path: str, method: str, op: JsonObject, schemas: JsonObject, regexes: dict[str, str]
) -> None:
    protected = path.startswith(API_PREFIX)
    _summarise(path, method, op)
    op["tags"] = [_tag_for(path, op.get("tags") or [])]
    _complete_path_parameters(path, op, regexes)
    if (method.upper(), path) in idempotency.ROUTES:
        op.setdefault("parameters", []).append(copy.deepcopy(IDEMPOTENCY_PARAMETER))

    body = op.get("requestBody")
    if body is not None:
        body.setdefault("required", True)
        for media in body.get("content", {}).values():
            _example_from_schema(media, schemas)

    for param in op.get("parameters", []):
        if param.get("in") == "query" and not param.get("required"):
            # An optional parameter is "no value" by being absent: a query string cannot carry a JSON null.
            param["schema"] = _without_null(param.get("schema", {}))

    responses: JsonObject = op.setdefault("responses", {})
    for status, response in responses.items():
        if not response.get("description"):
            response["description"] = phrase(status)
        if status in NO_BODY_STATUSES:
            response.pop("content", None)
        elif status.isdigit() and int(status) >= 400 and path != "/readyz":
            as_problem(int(status), response)
        for media in response.get("content", {}).values():
            _example_from_schema(media, schemas)

    if body is not None:
        # Whatever reads a body: malformed (400), too large (413), of another type (415), invalid (422).
        for code in (400, 413, 415, 422):
            responses.setdefault(str(code), problem_response(code))
    if protected:
        op["security"] = [{OAUTH2_SCHEME: []}, {BEARER_SCHEME: []}]
        statuses = {401, 503}
        if any(p.get("in") in ("query", "header") for p in op.get("parameters", [])):
            statuses.add(422)
        if _PATH_PARAM.search(path):
            statuses.add(404)
        if method != "get":
            statuses.add(409)
        for code in sorted(statuses):
            responses.setdefault(str(code), problem_response(code))
        if 503 in statuses:
            responses["503"].setdefault("headers", {})["Retry-After"] = {
                "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1},
            }

    rules = RULES.get((method, path))
    if rules is not None:
        op["description"] = f"{op['description']}\n\n{RULES_HEADING} {rules}"

    successor = ALIASES.get(path)
    if successor is not None:
        op["deprecated"] = True
        op["summary"] = f"{op['summary']} (deprecated alias)"
        op["description"] = f"A deprecated alias of `{method.upper()} {successor}`, kept for old clients."


def _without_null(schema: JsonObject) -> JsonObject:
    """`X | None` as pydantic writes it (`anyOf: [X, {type: null}]`, default null), as just X."""
    alternatives = schema.get("anyOf")
    if not isinstance(alternatives, list):
        return schema
    kept = [s for s in alternatives if s.get("type") != "null"]
    out = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(kept) == 1:
        out.update(kept[0])
    else:
        out["anyOf"] = kept
    return out


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


def _tag_for(path: str, declared: list[str]) -> str:
    """One tag per operation: statistics have their own, whatever else the view declares."""
    if path.startswith(API_PREFIX) and path.endswith("/stats"):
        return STATISTICS_TAG
    if declared:
        return str(declared[0])
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


def _example_from_schema(media: JsonObject, schemas: JsonObject) -> None:
    """Copy a model's `examples` onto the media type, where Swagger UI shows them."""
    if "example" in media or "examples" in media:
        return
    schema = media.get("schema") or {}
    ref = schema.get("$ref")
    examples: Any = None
    if isinstance(ref, str):
        examples = schemas.get(ref.rsplit("/", 1)[-1], {}).get("examples")
    elif schema.get("type") == "array" and isinstance(schema.get("items", {}).get("$ref"), str):
        item_examples = schemas.get(schema["items"]["$ref"].rsplit("/", 1)[-1], {}).get("examples")
        if isinstance(item_examples, list) and item_examples:
            examples = [item_examples]
    if isinstance(examples, list) and examples:
        if len(examples) == 1:
            media["example"] = examples[0]
        else:
            media["examples"] = {f"example{i + 1}": {"value": value} for i, value in enumerate(examples)}


def route_patterns(app: web.Application) -> dict[str, dict[str, str]]:
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


def operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    return f"{method}_{slug}"


def unique_id(candidate: str, taken: set[str]) -> str:
    result, n = candidate, 1
    while result in taken:
        n += 1
        result = f"{candidate}_{n}"
    taken.add(result)
    return result
