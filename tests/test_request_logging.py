"""Request ids, the access log, bound resource ids, the log file and the redaction of secrets."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient

from mailer.app import create_app
from mailer.observability.logging import REDACTED, Redactor, configured_secrets
from mailer.observability.middleware import REQUEST_ID_HEADER, request_id_from
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET
from tests.log_support import CapturedLogs, captured_logs

AiohttpClient = Callable[[web.Application], Any]


@pytest.fixture
def logs(settings: Settings) -> Any:
    with captured_logs(settings) as captured:
        yield captured


@pytest.fixture
async def app_client(
    aiohttp_client: AiohttpClient, settings: Settings, logs: CapturedLogs
) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, with_engine=False))
    return client


async def login(client: TestClient[Any, Any]) -> str:
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status == 200
    return str((await resp.json())["access_token"])


def test_request_id_validation() -> None:
    assert request_id_from("abc-123") == "abc-123"
    assert request_id_from("x" * 128) == "x" * 128
    for bad in (None, "", "   ", "x" * 129, "line\nbreak", "tab\there", "ünïcode"):
        generated = request_id_from(bad)
        assert re.fullmatch(r"[0-9a-f]{32}", generated), bad


async def test_request_id_is_returned_and_logged(
    app_client: TestClient[Any, Any], logs: CapturedLogs
) -> None:
    started_s = time.perf_counter()
    resp = await app_client.get("/", headers={REQUEST_ID_HEADER: "req-4711"})
    elapsed_ms = (time.perf_counter() - started_s) * 1000
    assert resp.status == 200
    assert resp.headers[REQUEST_ID_HEADER] == "req-4711"
    [access] = [line for line in logs.events("http.request") if line.get("request_id") == "req-4711"]
    assert access["route"] == "/"
    assert access["method"] == "GET"
    assert access["status"] == 200
    # Measured inside the round trip the test timed around it.
    assert 0 < access["duration_ms"] <= elapsed_ms
    assert access["level"] == "info"


async def test_a_bad_request_id_is_replaced(app_client: TestClient[Any, Any], logs: CapturedLogs) -> None:
    resp = await app_client.get("/", headers={REQUEST_ID_HEADER: "x" * 200})
    generated = resp.headers[REQUEST_ID_HEADER]
    assert len(generated) == 32
    assert logs.events("http.request")[-1]["request_id"] == generated


async def test_errors_carry_the_request_id_and_the_route_template(
    app_client: TestClient[Any, Any], logs: CapturedLogs
) -> None:
    token = await login(app_client)
    resp = await app_client.get(
        "/api/customers/987654", headers={"Authorization": f"Bearer {token}", REQUEST_ID_HEADER: "r-404"}
    )
    assert resp.status == 404
    assert resp.headers[REQUEST_ID_HEADER] == "r-404"
    access = logs.events("http.request")[-1]
    assert access["route"] == "/api/customers/{id}"
    assert access["path"] == "/api/customers/987654"
    assert access["status"] == 404
    # The resource id is bound for every line of the request, so a grep for the customer finds the call.
    assert access["customer_id"] == 987654
    assert access["user"] == "admin"

    resp = await app_client.get("/no/such/place", headers={REQUEST_ID_HEADER: "r-unmatched"})
    assert resp.status == 404
    assert resp.headers[REQUEST_ID_HEADER] == "r-unmatched"
    assert logs.events("http.request")[-1]["route"] == "unmatched"


async def test_lines_logged_inside_a_request_carry_its_id(
    app_client: TestClient[Any, Any], logs: CapturedLogs
) -> None:
    resp = await app_client.post(
        "/auth/token",
        data={"username": "admin", "password": "wrong"},
        headers={REQUEST_ID_HEADER: "r-bad-login"},
    )
    assert resp.status == 401
    [failed] = logs.events("login failed")
    assert failed["request_id"] == "r-bad-login"


async def test_context_does_not_leak_between_requests_on_one_connection(
    app_client: TestClient[Any, Any], logs: CapturedLogs
) -> None:
    token = await login(app_client)
    headers = {"Authorization": f"Bearer {token}"}
    # The test client keeps the connection alive: both requests are served by one task.
    await app_client.get("/api/mailouts/55", headers={**headers, REQUEST_ID_HEADER: "first"})
    await app_client.get("/", headers={REQUEST_ID_HEADER: "second"})
    second = logs.events("http.request")[-1]
    assert second["request_id"] == "second"
    assert "mailout_id" not in second
    assert "user" not in second


async def test_probes_are_logged_at_debug(app_client: TestClient[Any, Any], logs: CapturedLogs) -> None:
    assert (await app_client.get("/healthz")).status == 200
    assert [line for line in logs.events("http.request") if line["route"] == "/healthz"] == []


def test_log_file_gets_json_lines(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    path = tmp_path / "mailer.log"
    settings = settings_factory(log_file=str(path), log_format="console")
    with captured_logs(settings) as captured:
        structlog.get_logger("test").info("written", mailout_id=3)
        logging.getLogger("stdlib").warning("also written")
        for handler in logging.getLogger().handlers:
            handler.flush()
        file_lines = [json.loads(line) for line in path.read_text().splitlines()]
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()
    assert [(line["event"], line.get("mailout_id")) for line in file_lines] == [
        ("written", 3),
        ("also written", None),
    ]
    # The stream got the console format, not JSON.
    assert "written" in captured.text
    assert not captured.text.startswith("{")


# --- secrets ------------------------------------------------------------------------------------------------


def test_redactor_removes_secrets_by_key_and_by_value() -> None:
    redactor = Redactor(["provider-token-123456", "short"])
    event: dict[str, Any] = {
        "event": "calling https://user:hunter22@host/x with provider-token-123456",
        "headers": {"Authorization": "Bearer abc.def.ghi", "Accept": "application/json"},
        "password": "hunter22",
        "smtp_password": None,
        "token_type": "bearer",
        "detail": "got header Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
        "items": ["fine", "Basic dXNlcjpwYXNz"],
        "count": 3,
        "note": "short stays: too short to search for",
    }
    out = redactor(None, "info", event)
    assert out["event"] == f"calling https://user:{REDACTED}@host/x with {REDACTED}"
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert out["password"] == REDACTED
    assert out["smtp_password"] is None
    assert out["token_type"] == "bearer"
    assert "eyJ" not in out["detail"]
    assert REDACTED in out["detail"]
    assert out["items"] == ["fine", f"Basic {REDACTED}"]
    assert out["count"] == 3
    assert out["note"] == "short stays: too short to search for"


def test_configured_secrets_include_the_database_password(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(
        database_url="postgresql://mailer:db-password-42@db:5432/mailer",
        provider_token="provider-token-xyz",
        smtp_password="smtp-password-xyz",
    )
    found = configured_secrets(settings)
    for secret in ("db-password-42", "provider-token-xyz", "smtp-password-xyz", ADMIN_PASSWORD, JWT_SECRET):
        assert secret in found


async def test_login_and_api_calls_never_log_a_secret(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(provider_token="provider-token-abcdef", log_level="DEBUG")
    with captured_logs(settings) as logs:
        client: TestClient[Any, Any] = await aiohttp_client(create_app(settings, with_engine=False))
        token = await login(client)
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/api/customers/", headers=headers)).status == 200
        await client.post("/auth/token", json={"username": "admin", "password": ADMIN_PASSWORD + "x"})
        # Defensive: even code that logs a secret by mistake does not leak it.
        structlog.get_logger("careless").info("oops", headers=dict(headers), note=f"token {token}")
        try:
            raise RuntimeError(f"failed with password {ADMIN_PASSWORD}")
        except RuntimeError:
            structlog.get_logger("careless").exception("crash")
    output = logs.text
    assert '"login"' in output
    assert "crash" in output
    for secret in (token, ADMIN_PASSWORD, JWT_SECRET, "provider-token-abcdef"):
        assert secret not in output, secret
