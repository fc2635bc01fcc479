"""Every probe of issue 13, as a hostile or careless client would send it: the ones that held, kept, and
the ones that did not, fixed. Probes that touch the database run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import event, select
from yarl import URL

from mailer import keys
from mailer.app import _token_issuer, create_app
from mailer.client_address import client_address
from mailer.domain.errors import AuthenticationError
from mailer.observability.truncate import MAX_VALUE_CHARS, TruncateValues, clip
from mailer.settings import MIN_PASSWORD_CHARS, MIN_SECRET_BYTES, Settings
from mailer.store.tables import messages
from mailer.tokens import FOREIGN_TOKEN, INVALID_TOKEN
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET, AiohttpClient, Api
from tests.log_support import captured_logs
from tests.polling import eventually

CUSTOMERS = "/api/customers/"
DEADLINE_S = 10.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict[str, Any], key: str, alg: str = "HS256") -> str:
    """A JWT built by hand, as an attacker would: any key (empty too), any algorithm, no library checks."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    if alg == "none":
        return f"{header}.{payload}."
    signature = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def fresh_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "admin", "iat": now, "exp": now + 600, "iss": "mailer"} | changes


async def status_with(client: TestClient[Any, Any], token: str) -> tuple[int, str]:
    resp = await client.get(CUSTOMERS, headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    return resp.status, str(body.get("detail", ""))


# --- tokens (held: no token, alg none, guessed or empty secret, changed exp; fixed: sub, lifetime, detail) --


async def test_the_right_token_is_accepted(client: TestClient[Any, Any]) -> None:
    """The baseline the refusals below are measured against: the same hand-made token, signed right."""
    assert (await status_with(client, signed(fresh_claims(), JWT_SECRET)))[0] == 200


@pytest.mark.parametrize("key", ["", "secret", "CHANGE-ME", "changeme", "mailer", "admin", ADMIN_PASSWORD])
async def test_tokens_signed_with_a_guessed_or_empty_secret_are_refused(
    client: TestClient[Any, Any], key: str
) -> None:
    status, detail = await status_with(client, signed(fresh_claims(), key))
    assert status == 401
    assert detail == FOREIGN_TOKEN


async def test_an_unsigned_token_is_refused(client: TestClient[Any, Any]) -> None:
    for alg in ("none", "None", "NONE"):
        status, detail = await status_with(client, signed(fresh_claims(), "", alg=alg))
        assert (status, detail) == (401, INVALID_TOKEN), alg


async def test_changed_claims_are_refused_with_one_generic_detail(client: TestClient[Any, Any]) -> None:
    now = int(time.time())
    # Signed with the right secret: only the claims are wrong, and nothing says which.
    for claims in (
        fresh_claims(sub="root"),
        fresh_claims(sub=""),
        fresh_claims(sub=["admin"]),
        fresh_claims(iat=now, exp=now + 10 * 365 * 24 * 3600),  # longer than the configured lifetime
        fresh_claims(iat=now - 7200, exp=now - 3600),  # expired
        fresh_claims(iss="someone-else"),
        {"sub": "admin", "exp": now + 60, "iss": "mailer"},  # no iat
        fresh_claims(exp="never"),
    ):
        status, detail = await status_with(client, signed(claims, JWT_SECRET))
        assert (status, detail) == (401, INVALID_TOKEN), claims


async def test_a_token_with_its_exp_edited_after_signing_is_refused(client: TestClient[Any, Any]) -> None:
    header, _, signature = signed(fresh_claims(), JWT_SECRET).split(".")
    later = _b64(json.dumps(fresh_claims(exp=int(time.time()) + 10**6)).encode())
    status, detail = await status_with(client, f"{header}.{later}.{signature}")
    assert (status, detail) == (401, FOREIGN_TOKEN)


async def test_a_token_from_a_restarted_process_says_to_sign_in_again(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    """A process with a random secret issues a token; the same process after a restart has another secret."""
    settings = settings_factory(jwt_secret=None)
    before = await aiohttp_client(create_app(settings, with_engine=False))
    resp = await before.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    token = (await resp.json())["access_token"]
    assert (await status_with(before, token))[0] == 200
    after = _token_issuer(settings)  # what create_app builds at the next start: a new random secret
    with pytest.raises(AuthenticationError) as refused:
        after.verify(token)
    detail = str(refused.value)
    assert detail == FOREIGN_TOKEN
    assert "signed by another secret or process" in detail
    assert "sign in again" in detail
    assert "Signature verification failed" not in detail


async def test_every_api_route_needs_a_token(client: TestClient[Any, Any]) -> None:
    for method, path in (
        ("GET", CUSTOMERS),
        ("POST", CUSTOMERS),
        ("POST", "/api/customers/import"),
        ("GET", "/api/mailouts/"),
        ("DELETE", "/api/mailouts/1"),
        ("GET", "/api/messages/1"),
        ("GET", "/api/no-such-route"),
    ):
        resp = await client.request(method, path)
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# --- the built-in sandbox's control API (fixed: it needs the admin's token) ------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sandbox/v1/_control/received"),
        ("GET", "/sandbox/v1/_control/stats"),
        ("GET", "/sandbox/v1/_control/counts"),
        ("PUT", "/sandbox/v1/_control/faults"),
        ("POST", "/sandbox/v1/_control/reset"),
        ("POST", "/sandbox/v1/_control/refuse"),
    ],
)
async def test_the_sandbox_control_api_needs_the_admin_token(
    client: TestClient[Any, Any], method: str, path: str
) -> None:
    resp = await client.request(method, path, json={"error_rate": 1.0})
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    forged = signed(fresh_claims(), "CHANGE-ME")
    resp = await client.request(method, path, headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401


async def test_the_sandbox_control_api_answers_the_admin(api: Api) -> None:
    resp = await api.put("/sandbox/v1/_control/faults", json={"latency_ms": 1.5})
    assert resp.status == 200
    assert (await resp.json())["latency_ms"] == 1.5
    resp = await api.get("/sandbox/v1/_control/received")
    assert resp.status == 200
    assert (await resp.json())["items"] == []
    # The send API itself stays as the provider's: it checks the provider token, not the admin's.
    body = {"id": 1, "phone": 79001234567, "text": "x"}
    provider = {"Authorization": f"Bearer {api.client.app[keys.PROVIDER_TOKEN]}"}
    resp = await api.client.post("/sandbox/v1/send/1", json=body, headers=provider)
    assert resp.status == 200


def test_the_service_listens_on_loopback_unless_told() -> None:
    assert Settings(_env_file=None).host == "127.0.0.1"


# --- weak secrets (fixed: refused at start, naming the variable) -------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jwt_secret", "CHANGE-ME"),
        ("jwt_secret", "change-me-to-32-random-bytes"),
        ("jwt_secret", "x" * (MIN_SECRET_BYTES - 1)),
        ("jwt_secret", "changeme-changeme-changeme-changeme"),
        ("jwt_secret", "ab" * 40),
        ("session_secret", "secret"),
        ("session_secret", "0123456789abcdef0123456789abcde"),
        ("admin_password", "a"),
        ("admin_password", "x" * (MIN_PASSWORD_CHARS - 1)),
        ("admin_password", "CHANGE-ME-CHANGE-ME"),
    ],
)
def test_weak_secrets_are_refused_by_name(field: str, value: str) -> None:
    values: dict[str, Any] = {field: value}
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    [error] = caught.value.errors(include_input=False)
    assert error["loc"] == (field,)
    assert len(value) < 4 or value not in error["msg"]  # what the CLI prints does not echo the secret


def test_strong_secrets_are_accepted() -> None:
    settings = Settings(
        jwt_secret=JWT_SECRET,
        session_secret="n4W7q2Lr9xZp1Vb8Tk3Hs6Jd0Gf5Mc2A",
        admin_password=ADMIN_PASSWORD,
    )
    assert settings.jwt_secret is not None


def test_production_refuses_random_secrets() -> None:
    strong = "n4W7q2Lr9xZp1Vb8Tk3Hs6Jd0Gf5Mc2A"
    for missing in ("jwt_secret", "session_secret"):
        values: dict[str, Any] = {"env": "production", "jwt_secret": strong, "session_secret": strong}
        values[missing] = None
        with pytest.raises(ValidationError, match=f"MAILER_{missing.upper()}"):
            Settings(provider_url="http://127.0.0.1:9/v1", **values)


# --- the login (held: rate limit; fixed: odd content types, trusted proxies, per-username backoff) ---------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=x-bogus", b'{"username": "admin", "password": "x"}'),
        ("application/json; charset=latin-1", b'{"username": "admin", "password": "x"}'),
        ("application/x-www-form-urlencoded; charset=x-bogus", b"username=admin&password=x"),
        ("text/plain", b"username=admin&password=x"),
    ],
)
async def test_login_with_an_odd_content_type_is_415(
    client: TestClient[Any, Any], content_type: str, body: bytes
) -> None:
    resp = await client.post("/auth/token", data=body, headers={"Content-Type": content_type})
    assert resp.status == 415, await resp.text()
    assert resp.content_type == "application/problem+json"


async def test_a_failed_login_with_a_huge_username_writes_a_short_line(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    with captured_logs(settings) as logs:
        client = await aiohttp_client(create_app(settings, with_engine=False))
        resp = await client.post("/auth/token", data={"username": "u" * 900_000, "password": "wrong"})
        assert resp.status == 401
        [line] = logs.events("login failed")
        assert len(line["username"]) < MAX_VALUE_CHARS + 32
        assert max(len(raw) for raw in logs.text.splitlines()) < 4 * 1024


def test_client_address_trusts_only_the_configured_hops() -> None:
    assert client_address("10.0.0.1", ["6.6.6.6"], 0) == "10.0.0.1"
    # One proxy appended the address it saw: the last entry. Whatever the client wrote before is ignored.
    assert client_address("10.0.0.1", ["6.6.6.6, 203.0.113.7"], 1) == "203.0.113.7"
    assert client_address("10.0.0.1", ["6.6.6.6", "203.0.113.7, 10.0.0.2"], 2) == "203.0.113.7"
    assert client_address("10.0.0.1", ["203.0.113.7"], 3) == "203.0.113.7"
    assert client_address("10.0.0.1", [], 1) == "10.0.0.1"
    assert client_address("10.0.0.1", ["not-an-address"], 1) == "10.0.0.1"
    assert client_address("10.0.0.1", ["2001:db8::1"], 1) == "2001:db8::1"
    assert client_address(None, [], 0) == "unknown"


async def test_behind_a_trusted_proxy_each_client_has_its_own_login_bucket(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(trusted_proxies=1, login_attempts_per_minute=3)
    client = await aiohttp_client(create_app(settings, with_engine=False))

    async def login(address: str, username: str, password: str = "wrong") -> int:
        resp = await client.post(
            "/auth/token",
            data={"username": username, "password": password},
            headers={"X-Forwarded-For": f"198.51.100.99, {address}"},
        )
        return resp.status

    assert [await login("203.0.113.1", f"user{i}") for i in range(4)] == [401, 401, 401, 429]
    # Another client behind the same proxy is not locked out by the first one's attempts.
    assert await login("203.0.113.2", "admin", ADMIN_PASSWORD) == 200


async def test_a_flood_on_one_username_backs_off_but_the_known_admin_gets_in(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(trusted_proxies=1)
    client = await aiohttp_client(create_app(settings, with_engine=False))

    async def login(address: str, password: str) -> int:
        resp = await client.post(
            "/auth/token",
            data={"username": "admin", "password": password},
            headers={"X-Forwarded-For": address},
        )
        return resp.status

    assert await login("192.0.2.1", ADMIN_PASSWORD) == 200  # the admin's usual address
    # Wrong passwords from many addresses, each under its own limit: the first ones are checked, then the
    # name backs off for everyone new, and no guess is tested meanwhile (even a right one).
    statuses = [await login(f"203.0.113.{i}", "guess") for i in range(1, 40)]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    assert await login("203.0.113.200", ADMIN_PASSWORD) == 429
    # The address that signed in before is not held back by the flood.
    assert await login("192.0.2.1", ADMIN_PASSWORD) == 200


# --- odd input (held: SQL injection, sizes, nesting, numbers, NaN, UTF-8, NUL; fixed: 415) --------------


async def test_sql_injection_strings_are_data(api: Api) -> None:
    injection = "'; DROP TABLE customers; --"
    resp = await api.post(CUSTOMERS, json={"phone": "79001234567", "tag": injection})
    assert resp.status == 201
    for query in ({"tag": "' OR '1'='1"}, {"phone": "7' OR 1=1 --"}, {"operator_code": "1 OR 1=1"}):
        resp = await api.get(CUSTOMERS, params=query)
        assert resp.status in (200, 422), query
        if resp.status == 200:
            assert (await resp.json())["items"] == [], query
    resp = await api.get("/api/search", params={"q": "' OR 1=1 --"})
    assert resp.status == 200
    assert (await resp.json())["customers"] == []
    [customer] = (await (await api.get(CUSTOMERS)).json())["items"]
    assert customer["tag"] == injection


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nested deeper than any parser's stack
        (b'{"phone": ' + b"7" * 5_000 + b"}", 400),  # an integer longer than Python converts
        (b'{"phone": NaN}', 422),
        (b'{"phone": Infinity}', 422),
        (b'{"phone": "7900\xff1234567"}', 400),  # not UTF-8
        (b'{"phone": "79001234567", "tag": "a\\u0000b"}', 422),  # NUL: PostgreSQL text cannot hold it
        (b'{"phone": "79001234567", "tag": "\\ud800"}', 422),  # a lone surrogate
    ],
)
async def test_malformed_bodies_are_4xx(api: Api, body: bytes, status: int) -> None:
    resp = await api.post(CUSTOMERS, data=io.BytesIO(body), headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await (await api.get(CUSTOMERS)).json())["items"] == []


async def test_a_body_over_the_limit_is_413(api: Api) -> None:
    body = json.dumps({"phone": "79001234567", "tag": "x" * (2 * 1024 * 1024)}).encode()
    resp = await api.post(CUSTOMERS, data=io.BytesIO(body), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize("headers", [{"Content-Type": "text/plain"}, {}, {"Content-Type": "application/xml"}])
async def test_a_json_route_refuses_a_body_of_another_type(api: Api, headers: dict[str, str]) -> None:
    body = json.dumps({"phone": "79001234567"}).encode()
    resp = await api.post(CUSTOMERS, data=body, headers=headers)
    assert resp.status == 415, await resp.text()
    assert resp.content_type == "application/problem+json"
    resp = await api.patch("/api/customers/1", data=body, headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert (await (await api.get(CUSTOMERS)).json())["items"] == []


async def test_a_json_route_refuses_a_charset_other_than_utf8(api: Api) -> None:
    body = json.dumps({"phone": "79001234567"}).encode()
    resp = await api.post(CUSTOMERS, data=body, headers={"Content-Type": "application/json; charset=x-bogus"})
    assert resp.status == 415
    resp = await api.post(CUSTOMERS, data=body, headers={"Content-Type": "application/json; charset=UTF-8"})
    assert resp.status == 201


async def test_a_post_without_a_body_needs_no_content_type(api: Api) -> None:
    created = await api.post(
        "/api/mailouts/",
        json={
            "start_at": "2999-01-01T00:00:00Z",
            "end_at": "2999-01-02T00:00:00Z",
            "text": "later",
            "filter": {"operator_codes": [], "tags": []},
        },
    )
    assert created.status == 201
    mailout_id = (await created.json())["id"]
    resp = await api.post(f"/api/mailouts/{mailout_id}/pause")
    assert resp.status == 200, await resp.text()


async def test_a_client_that_disconnects_mid_body_is_counted_as_499(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    def counted() -> float:
        value = REGISTRY.get_sample_value(
            "mailer_http_requests_total", {"method": "POST", "route": "/api/customers/", "status": "499"}
        )
        return value or 0.0

    with captured_logs(settings) as logs:
        client = await aiohttp_client(create_app(settings, with_engine=False))
        resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
        token = (await resp.json())["access_token"]
        before = counted()
        _, writer = await asyncio.open_connection(client.host, client.port)
        writer.write(
            b"POST /api/customers/ HTTP/1.1\r\nHost: test\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"phone": "7900'
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def logged() -> list[dict[str, Any]]:
            return [line for line in logs.events("http.request") if line.get("status") == 499]

        [line] = await eventually(logged, DEADLINE_S, "the 499 access line")
        assert line["level"] == "info"
        assert counted() == before + 1
        assert not logs.events("unhandled error")
        assert "Traceback" not in logs.text


# --- a long delete (fixed: in chunks, each its own short transaction) ------------------------------------


async def test_a_mailout_delete_goes_in_chunks_and_leaves_other_mailouts_alone(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailer.store.mailouts.DELETE_CHUNK_ROWS", 3)
    body = {
        "start_at": "2999-01-01T00:00:00Z",
        "end_at": "2999-01-02T00:00:00Z",
        "text": "later",
        "filter": {"operator_codes": [], "tags": []},
    }
    doomed, kept = [(await (await api.post("/api/mailouts/", json=body)).json())["id"] for _ in range(2)]
    for i in range(10):
        customer = await (await api.post(CUSTOMERS, json={"phone": f"7900123{i:04d}"})).json()
        for mailout_id in (doomed, kept) if i < 2 else (doomed,):
            added = await api.post(
                f"/api/mailouts/{mailout_id}/messages", json={"customer_id": customer["id"]}
            )
            assert added.status == 201, await added.text()
    commits = 0

    def count_commit(*_: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(api.db.sync_engine, "commit", count_commit)
    try:
        assert (await api.delete(f"/api/mailouts/{doomed}")).status == 204
    finally:
        event.remove(api.db.sync_engine, "commit", count_commit)
    assert commits >= 10 // 3 + 1  # the message chunks, then the mailout row
    assert (await api.get(f"/api/mailouts/{doomed}")).status == 404
    async with api.db.connect() as conn:
        left = (await conn.execute(select(messages.c.mailout_id))).scalars().all()
    assert left == [kept, kept]


# --- HTTP hygiene (fixed: nosniff, Server, readyz, logs; held: traversal, CORS) ----------------------------


async def test_every_response_says_nosniff_and_names_no_versions(api: Api) -> None:
    client = api.client
    for method, path, headers in (
        ("GET", "/", {}),
        ("GET", "/healthz", {}),
        ("GET", "/metrics", {}),
        ("GET", "/nowhere", {}),
        ("GET", CUSTOMERS, {}),  # 401
        ("GET", CUSTOMERS, api.headers),
        ("POST", CUSTOMERS, {**api.headers, "Content-Type": "text/plain"}),  # 415
        ("GET", "/api/customers/999", api.headers),  # 404 problem
        ("GET", "/docs/", {}),
        ("GET", "/docs/static/no-such-file.js", {}),
        ("GET", "/sandbox/v1/_control/stats", {}),
        ("POST", "/sandbox/v1/send/1", {}),
    ):
        resp = await client.request(method, path, headers=headers)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", (method, path, resp.status)
        server = resp.headers.get("Server", "")
        assert "aiohttp" not in server, (method, path, server)
        assert "Python" not in server, (method, path, server)


@pytest.mark.parametrize(
    "path",
    [
        "/docs/static/%2e%2e/%2e%2e/settings.py",
        "/docs/static/..%2f..%2fsettings.py",
        "/docs/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/docs/static/.git/config",
        "/docs/static//etc/passwd",
        "/docs/static/%00",
    ],
)
async def test_static_paths_cannot_leave_their_directory(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.get(URL(path, encoded=True))
    assert resp.status in (400, 404), path
    assert "BaseSettings" not in await resp.text()


async def test_a_missing_static_file_is_counted_and_logged_as_404(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    route = "/docs/static/{path}"

    def counted(status: str) -> float:
        labels = {"method": "GET", "route": route, "status": status}
        return REGISTRY.get_sample_value("mailer_http_requests_total", labels) or 0.0

    with captured_logs(settings) as logs:
        client = await aiohttp_client(create_app(settings, with_engine=False))
        before_404, before_200 = counted("404"), counted("200")
        resp = await client.get("/docs/static/no-such-file.js")
        assert resp.status == 404
        [line] = [line for line in logs.events("http.request") if line["route"] == route]
        assert line["status"] == 404
    assert (counted("404"), counted("200")) == (before_404 + 1, before_200)


async def test_no_cors_for_a_foreign_origin(api: Api) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = await api.client.options(
        CUSTOMERS, headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    resp = await api.get(CUSTOMERS, headers=origin)
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_readiness_never_shows_the_database_error(client: TestClient[Any, Any]) -> None:
    async def failing() -> str | None:
        raise ConnectionRefusedError("connect to host db.internal port 5432 user mailer_owner failed")

    health = client.app[keys.HEALTH]
    health.add_check("database", failing)  # in place of the real check, as a database that went away
    ready, detail = await health.report()
    assert not ready
    assert detail["database"] == "unavailable (ConnectionRefusedError)"
    resp = await client.get("/readyz")
    assert resp.status == 503
    text = await resp.text()
    assert "db.internal" not in text
    assert "mailer_owner" not in text


def test_clip_and_the_truncating_processor() -> None:
    assert clip("short") == "short"
    long = "x" * 1000
    clipped = clip(long)
    assert clipped.startswith("x" * MAX_VALUE_CHARS)
    assert clipped.endswith("[1000 chars]")
    processor = TruncateValues()
    event = processor(
        None,
        "info",
        {"event": "e", "username": long, "nested": {"list": [long]}, "exception": long, "n": 5},
    )
    assert len(event["username"]) < MAX_VALUE_CHARS + 32
    assert len(event["nested"]["list"][0]) < MAX_VALUE_CHARS + 32
    assert event["exception"] == long  # a traceback is ours, and useless cut
    assert event["n"] == 5


async def test_metrics_have_no_created_series(client: TestClient[Any, Any]) -> None:
    await client.get("/healthz")
    text = await (await client.get("/metrics")).text()
    assert "mailer_http_requests_total" in text
    assert "_created" not in text


async def test_captured_logs_hold_no_secret(api: Api, settings: Settings) -> None:
    """The probes above logged through the service's own pipeline; nothing secret may show in it."""
    with captured_logs(settings) as logs:
        await api.client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD + "!"})
        await api.get(CUSTOMERS)
    assert logs.lines
    for secret in (ADMIN_PASSWORD, JWT_SECRET, api.headers["Authorization"].split()[1]):
        assert secret not in logs.text
