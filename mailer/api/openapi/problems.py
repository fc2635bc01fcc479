"""The problem+json responses of the document: the very bodies the problem middleware sends."""

from __future__ import annotations

import json
from http import HTTPStatus

from mailer.api.openapi.texts import PROBLEM_REASONS, JsonObject
from mailer.api.problems import PROBLEM_CONTENT_TYPE, problem


def phrase(status: str) -> str:
    try:
        return HTTPStatus(int(status)).phrase
    except ValueError:
        return "Any other status"


def problem_example(status: int, detail: str | None = None) -> JsonObject:
    """The body the service really sends for `status`, built by the same function that sends it."""
    response = problem(status, detail or PROBLEM_REASONS.get(status, phrase(str(status))))
    assert response.text is not None
    body: JsonObject = json.loads(response.text)
    if status == 422:
        body["errors"] = [
            {
                "loc": ["body", "start_at"],
                "msg": "must be an RFC 3339 date-time with an offset, such as 2026-12-01T09:00:00+03:00",
            }
        ]
    return body


def problem_response(status: int, description: str | None = None) -> JsonObject:
    response: JsonObject = {
        "description": description or PROBLEM_REASONS.get(status, phrase(str(status))),
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
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        }
    return response


def as_problem(status: int, response: JsonObject) -> None:
    """Views annotate errors as `rNNN[Problem]`, which aiohttp-pydantic files under application/json; the
    problem middleware really answers application/problem+json."""
    content: JsonObject = response.get("content") or {}
    schemas = [media.get("schema", {}).get("$ref", "") for media in content.values()]
    if not content or all(ref.endswith("/Problem") for ref in schemas):
        response["content"] = problem_response(status, response.get("description"))["content"]
