"""The OpenAPI document: valid, complete (every route and method), and documented as the contract says."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import hdrs, web
from aiohttp.test_utils import TestClient
from aiohttp_pydantic.view import is_pydantic_view
from openapi_spec_validator import validate

from mailer import __version__
from mailer.api import idempotency
from mailer.api.openapi.document import build_openapi
from mailer.api.openapi.texts import ALIASES, BEARER_SCHEME, OAUTH2_SCHEME
from mailer.api.problems import PROBLEM_CONTENT_TYPE
from mailer.app import create_app
from mailer.domain.customers import available_zones
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET

Doc = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


@pytest.fixture
def app(tmp_path: Path) -> web.Application:
    # Building the document needs the routes only; the app is never started, so no database is touched.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
    )
    return create_app(settings, with_engine=False)


@pytest.fixture
def doc(app: web.Application) -> Doc:
    return build_openapi(app)


def operations(doc: Doc) -> list[tuple[str, str, Doc]]:
    return [(path, m, item[m]) for path, item in doc["paths"].items() for m in METHODS if m in item]


def routed_methods(app: web.Application) -> dict[str, set[str]]:
    """{path template: methods} of every route a client can call, as the router sees them."""
    out: dict[str, set[str]] = {}
    for resource in app.router.resources():
        if isinstance(resource, (web.StaticResource, web.PrefixedSubAppResource)):
            continue
        if resource.canonical.endswith("/{path}"):
            continue  # files served by mailer.assets
        for route in resource:
            if route.method == hdrs.METH_ANY:
                handler: Any = route.handler
                methods = set(handler.allowed_methods) if is_pydantic_view(handler) else set()
            else:
                methods = {route.method}
            out.setdefault(resource.canonical, set()).update(m.lower() for m in methods - {hdrs.METH_HEAD})
    return out


def has_example(op: Doc) -> bool:
    media = [*op.get("requestBody", {}).get("content", {}).values()]
    for response in op["responses"].values():
        media.extend(response.get("content", {}).values())
    return any("example" in m or "examples" in m for m in media)


def test_document_is_valid_openapi_3_1(doc: Doc) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "mailer"
    assert doc["info"]["version"] == __version__
    assert doc["info"]["description"]


def test_every_route_is_documented_with_its_methods(app: web.Application, doc: Doc) -> None:
    routed = routed_methods(app)
    documented = {path: {m for m in METHODS if m in item} for path, item in doc["paths"].items()}
    assert documented == routed
    # The contract's routes, named here so that a router walk that found nothing cannot pass.
    for path, method in [
        ("/", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/auth/token", "post"),
        ("/openapi.json", "get"),
        ("/docs/", "get"),
        ("/api/customers/", "post"),
        ("/api/customers/{id}", "patch"),
        ("/api/customers/import", "post"),
        ("/api/mailouts/{id}/cancel", "post"),
        ("/api/mailouts/stats", "get"),
        ("/api/mailouts/{id}/messages", "post"),
        ("/api/messages/{id}", "get"),
    ]:
        assert method in doc["paths"].get(path, {}), f"{method.upper()} {path}"


def test_the_sandbox_and_static_files_are_not_documented(doc: Doc) -> None:
    assert not [p for p in doc["paths"] if p.startswith(("/sandbox", "/docs/static", "/docs/mailer"))]


def test_every_operation_has_a_summary_a_description_an_example_and_a_unique_id(doc: Doc) -> None:
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert op.get("summary", "").strip(), where
        assert op.get("description", "").strip(), where
        assert has_example(op), where
        assert op.get("tags"), where


def test_api_operations_need_a_token_and_public_ones_do_not(doc: Doc) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes[OAUTH2_SCHEME]["flows"]["password"]["tokenUrl"] == "/auth/token"
    assert schemes[BEARER_SCHEME] == {**schemes[BEARER_SCHEME], "type": "http", "scheme": "bearer"}
    assert "security" not in doc
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        if path.startswith("/api/"):
            assert op["security"] == [{OAUTH2_SCHEME: []}, {BEARER_SCHEME: []}], where
            assert "401" in op["responses"], where
        else:
            assert not op.get("security"), where


def test_errors_are_problem_json_where_they_can_happen(doc: Doc) -> None:
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        for status, response in responses.items():
            if status.isdigit() and int(status) >= 400 and path.startswith(("/api/", "/auth/")):
                assert list(response["content"]) == [PROBLEM_CONTENT_TYPE], f"{where} {status}"
                media = response["content"][PROBLEM_CONTENT_TYPE]
                assert media["schema"] == {"$ref": "#/components/schemas/Problem"}
                assert media["example"]["status"] == int(status)
        if not path.startswith("/api/"):
            continue
        if "{" in path:
            assert "404" in responses, where
        has_query = any(p["in"] == "query" for p in op.get("parameters", []))
        if "requestBody" in op or has_query:
            assert "422" in responses, where
        if "requestBody" in op:
            assert {"400", "413"} <= set(responses), where
        assert "204" not in responses or "content" not in responses["204"], where


def test_path_parameters_are_plain_names_with_integer_ids(doc: Doc) -> None:
    for path, method, op in operations(doc):
        assert ":" not in path, path
        assert "\\" not in path, path
        names = re.findall(r"\{(\w+)\}", path)
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        assert set(params) == set(names), f"{method.upper()} {path}"
        if "id" in params:
            assert params["id"]["required"] is True
            assert params["id"]["schema"]["type"] == "integer"
            assert params["id"]["schema"]["minimum"] == 1


def test_token_endpoint_documents_form_and_json_bodies(doc: Doc) -> None:
    op = doc["paths"]["/auth/token"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"application/x-www-form-urlencoded", "application/json"}
    form = doc["components"]["schemas"]["TokenForm"]
    assert {"username", "password", "grant_type"} <= set(form["properties"])
    token = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert token == {"$ref": "#/components/schemas/Token"}
    assert {"401", "422", "429"} <= set(op["responses"])


def test_request_examples_come_from_the_models(doc: Doc) -> None:
    body = doc["paths"]["/api/customers/"]["post"]["requestBody"]["content"]["application/json"]
    assert "example" in body or "examples" in body


def test_schemas_are_json_schema_as_pydantic_writes_them(doc: Doc) -> None:
    text = json.dumps(doc)
    # OpenAPI 3.0's dialect is gone: null is a type, examples are lists.
    assert '"nullable"' not in text
    message = doc["components"]["schemas"]["MessageOut"]["properties"]["sent_at"]
    assert {"type": "null"} in message["anyOf"]
    assert isinstance(doc["components"]["schemas"]["CustomerIn"]["examples"], list)


def test_time_zones_are_the_enum_the_server_enforces(doc: Doc) -> None:
    zone = doc["components"]["schemas"]["CustomerIn"]["properties"]["timezone"]
    assert zone["enum"] == sorted(available_zones())
    assert {"UTC", "Europe/Moscow", "Asia/Kathmandu"} <= set(zone["enum"])
    assert "europe/moscow" not in zone["enum"]


def test_patch_fields_that_refuse_null_are_not_nullable(doc: Doc) -> None:
    mailout = doc["components"]["schemas"]["MailoutPatch"]["properties"]
    for name in ("start_at", "end_at", "text"):
        assert "anyOf" not in mailout[name], name
        assert mailout[name]["type"] == "string", name
    assert {"type": "null"} in mailout["send_window"]["anyOf"]
    customer = doc["components"]["schemas"]["CustomerPatch"]["properties"]
    for name in ("phone", "operator_code", "timezone"):
        assert {"type": "null"} not in customer[name].get("anyOf", []), name
        assert "default" not in customer[name], name
    assert {"type": "null"} in customer["tag"]["anyOf"]


def test_a_window_has_both_ends_and_datetimes_are_rfc3339_text(doc: Doc) -> None:
    window = doc["components"]["schemas"]["SendWindowBody"]
    assert set(window["required"]) == {"start", "end"}
    start = doc["components"]["schemas"]["MailoutCreate"]["properties"]["start_at"]
    assert start["type"] == "string"
    assert start["format"] == "date-time"
    assert re.fullmatch(start["pattern"].strip("^$"), "2026-12-01T09:00:00+03:00")
    assert not re.fullmatch(start["pattern"].strip("^$"), "2026-12-01T09:00:00")


def test_phone_query_is_a_phone(doc: Doc) -> None:
    [phone] = [p for p in doc["paths"]["/api/customers/"]["get"]["parameters"] if p["name"] == "phone"]
    assert phone["schema"]["pattern"] == "^7[0-9]{10}$"


def test_aliases_are_deprecated_and_statistics_have_one_tag(doc: Doc) -> None:
    for alias in ALIASES:
        for _, op in ((m, o) for m, o in doc["paths"][alias].items() if m in METHODS):
            assert op["deprecated"] is True, alias
    for path, method, op in operations(doc):
        if path in ALIASES:
            continue
        assert not op.get("deprecated"), f"{method} {path}"
        if path.endswith("/stats"):
            assert op["tags"] == ["statistics"], path
        assert len(op["tags"]) == 1, path
    assert [t["name"] for t in doc["tags"]].count("statistics") == 1


def test_creates_document_the_idempotency_key(doc: Doc) -> None:
    creates = {path for _, path in idempotency.ROUTES}
    for path, method, op in operations(doc):
        headers = [p for p in op.get("parameters", []) if p["in"] == "header"]
        if method == "post" and path in creates:
            [key] = headers
            assert key["name"] == "Idempotency-Key"
            assert key["schema"]["maxLength"] == 255
            assert "409" in op["responses"]
        else:
            assert not headers, f"{method} {path}"


def test_plain_handlers_have_generated_schemas(doc: Doc) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("IndexOut", "HealthOut", "ReadyOut", "Token", "TokenForm", "TokenJson"):
        assert schemas[name]["type"] == "object", name
    index = doc["paths"]["/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert index == {"$ref": "#/components/schemas/IndexOut"}
    ready = doc["paths"]["/readyz"]["get"]["responses"]
    assert ready["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ReadyOut"}


async def test_openapi_json_is_served_and_built_once(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[web.Application] = []
    real_build = build_openapi

    def counting_build(app: web.Application) -> Doc:
        calls.append(app)
        return real_build(app)

    monkeypatch.setattr("mailer.api.docs.build_openapi", counting_build)
    first = await client.get("/openapi.json")
    assert first.status == 200
    assert first.content_type == "application/json"
    body = await first.json()
    assert body["paths"]["/api/customers/"]
    second = await client.get("/openapi.json")
    assert await second.json() == body
    assert len(calls) == 1


def test_rules_the_schema_cannot_state_are_in_the_descriptions(doc: Doc) -> None:
    for method, path in [
        ("post", "/api/mailouts/"),
        ("put", "/api/mailouts/{id}"),
        ("patch", "/api/mailouts/{id}"),
    ]:
        description = doc["paths"][path][method]["description"]
        assert "**Rules the schema cannot state.**" in description
        assert "later than `start_at`" in description
    assert "`phone` among them" in doc["paths"]["/api/customers/import"]["post"]["description"]
