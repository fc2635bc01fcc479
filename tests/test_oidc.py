"""The admin UI's sign-in end to end: the service and a real OpenID Connect provider, both on loopback."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from yarl import URL

from mailer.admin.auth import provider as provider_module
from mailer.admin.auth.idtoken import IdTokenError
from mailer.admin.auth.middleware import COOKIE_NAME
from mailer.admin.auth.provider import (
    JWKS_REFETCH_MIN_INTERVAL_S,
    OidcProvider,
    ProviderRefused,
    ProviderUnavailable,
)
from mailer.admin.auth.session import OidcFlow, SessionCodec
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD
from tests.log_support import captured_logs
from tests.oidc_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    MockProvider,
    free_port,
    jwt_claims,
    mock_provider,
    oidc_service_settings,
    running_service,
    s256,
    user,
)

SESSION_SECRET = "integration-session-secret-0123456789-abcdefghij"
USERS = [
    user("alice", email="alice@example.com", email_verified=True, name="Alice Admin"),
    user("bob", email="bob@elsewhere.example", email_verified=True, name="Bob Outsider"),
    user("carol", email="carol@elsewhere.example", email_verified=True, groups=["staff", "mailer-admins"]),
    user("dave", email="dave@corp.example", email_verified=False, name="Dave Unverified"),
    user("erin", email="erin@corp.example", email_verified=True),
]


@pytest.fixture(scope="module")
def provider() -> Iterator[MockProvider]:
    with mock_provider(USERS) as running:
        yield running


@pytest.fixture
def oidc_settings(settings_factory: Callable[..., Settings], provider: MockProvider) -> Settings:
    return oidc_service_settings(
        settings_factory,
        provider,
        SESSION_SECRET,
        oidc_allowed_emails="alice@example.com,*@corp.example",
        oidc_allowed_groups="mailer-admins",
    )


@pytest.fixture
async def service(oidc_settings: Settings) -> AsyncIterator[str]:
    async with running_service(oidc_settings) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # unsafe=True: the cookie jar takes cookies from IP-address hosts (127.0.0.1) too.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


def has_session_cookie(http: aiohttp.ClientSession, service: str) -> bool:
    return COOKIE_NAME in http.cookie_jar.filter_cookies(URL(f"{service}/admin/"))


async def signed_in(http: aiohttp.ClientSession, service: str) -> bool:
    """Whether this browser has a signed-in session: the login page then sends it on to the UI."""
    resp = await http.get(f"{service}/admin/login", allow_redirects=False)
    return resp.status == 302 and resp.headers["Location"] == "/admin/"


async def to_provider(http: aiohttp.ClientSession, service: str) -> str:
    """From the admin UI to the provider's consent page, following redirects; returns that page's URL."""
    resp = await http.get(f"{service}/admin/")
    assert resp.url.path == "/admin/login"
    page = await resp.text()
    assert "Sign in with 127.0.0.1" in page
    start = re.search(r'href="(/admin/auth/start[^"]*)"', page)
    assert start is not None
    resp = await http.get(f"{service}{start.group(1).replace('&amp;', '&')}")
    assert resp.status == 200
    assert "Authorize Client" in await resp.text()
    return str(resp.url)


async def answer(
    http: aiohttp.ClientSession, consent_url: str, form: dict[str, str]
) -> aiohttp.ClientResponse:
    """Post the provider's form (an identity, or "deny"), then follow its redirect to our callback."""
    resp = await http.post(consent_url, data=form, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    callback = resp.headers["Location"]
    assert URL(callback).path == "/admin/auth/callback"
    return await http.get(callback, allow_redirects=False)


async def test_allowed_user_signs_in_with_pkce_state_and_nonce(
    http: aiohttp.ClientSession, service: str, provider: MockProvider
) -> None:
    consent = await to_provider(http, service)
    authorize = URL(consent).query
    assert authorize["code_challenge_method"] == "S256"
    assert authorize["redirect_uri"] == f"{service}/admin/auth/callback"
    assert authorize["state"]
    assert authorize["nonce"]
    assert set(authorize["scope"].split()) >= {"openid", "email"}
    resp = await answer(http, consent, {"sub": "alice"})
    assert resp.status == 302
    assert resp.headers["Location"] == "/admin/"
    assert has_session_cookie(http, service)
    assert await signed_in(http, service)
    home = await http.get(f"{service}/admin/")
    assert home.status == 200
    assert "Alice Admin" in await home.text()
    # PKCE: the mock does not enforce it, so check what the service really sent.
    verifiers = [r.form["code_verifier"] for r in provider.to("/oauth2/token") if "code_verifier" in r.form]
    mine = [v for v in verifiers if s256(v) == authorize["code_challenge"]]
    assert len(mine) == 1
    assert 43 <= len(mine[0]) <= 128  # RFC 7636 4.1
    [redeemed] = [r for r in provider.to("/oauth2/token") if r.form.get("code_verifier") == mine[0]]
    # A confidential client: the secret goes in Basic authentication, never in the body.
    assert redeemed.authorization == aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)
    assert "client_secret" not in redeemed.form


async def test_a_public_client_signs_in_with_pkce_alone(
    http: aiohttp.ClientSession, oidc_settings: Settings, provider: MockProvider
) -> None:
    settings = oidc_settings.model_copy(update={"oidc_client_secret": None})
    async with running_service(settings) as service:
        consent = await to_provider(http, service)
        resp = await answer(http, consent, {"sub": "alice"})
        assert resp.status == 302
        assert await signed_in(http, service)
    challenge = URL(consent).query["code_challenge"]
    [redeemed] = [
        r for r in provider.to("/oauth2/token") if s256(r.form.get("code_verifier", "")) == challenge
    ]
    assert redeemed.authorization is None
    assert redeemed.form["client_id"] == CLIENT_ID


async def test_the_callback_cannot_be_replayed(http: aiohttp.ClientSession, service: str) -> None:
    consent = await to_provider(http, service)
    resp = await http.post(consent, data={"sub": "alice"}, allow_redirects=False)
    callback = resp.headers["Location"]
    first = await http.get(callback, allow_redirects=False)
    assert first.status == 302
    second = await http.get(callback, allow_redirects=False)
    assert second.status == 400
    assert "expired or began in another browser" in await second.text()


@pytest.mark.parametrize(
    ("sub", "reason"),
    [("bob", "not allowed"), ("dave", "not verified")],
)
async def test_a_user_outside_the_lists_gets_403_and_no_session(
    http: aiohttp.ClientSession, service: str, sub: str, reason: str
) -> None:
    consent = await to_provider(http, service)
    resp = await answer(http, consent, {"sub": sub})
    assert resp.status == 403
    assert reason in await resp.text()
    assert not has_session_cookie(http, service)
    resp = await http.get(f"{service}/admin/", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/admin/login")


@pytest.mark.parametrize("sub", ["carol", "erin"])
async def test_group_and_domain_rules_admit(http: aiohttp.ClientSession, service: str, sub: str) -> None:
    consent = await to_provider(http, service)
    resp = await answer(http, consent, {"sub": sub})
    assert resp.status == 302
    assert await signed_in(http, service)


async def test_deny_at_the_provider_gives_403_and_no_session(
    http: aiohttp.ClientSession, service: str
) -> None:
    consent = await to_provider(http, service)
    resp = await answer(http, consent, {"action": "deny"})
    assert resp.status == 403
    assert "access_denied" in await resp.text()
    assert not has_session_cookie(http, service)


async def test_logout_ends_the_session_and_the_providers(
    http: aiohttp.ClientSession, service: str, provider: MockProvider
) -> None:
    consent = await to_provider(http, service)
    await answer(http, consent, {"sub": "alice"})
    home = await http.get(f"{service}/admin/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', await home.text())
    assert token is not None
    refused = await http.post(f"{service}/admin/logout", allow_redirects=False)
    assert refused.status == 403
    assert await signed_in(http, service)
    resp = await http.post(
        f"{service}/admin/logout", data={"csrf_token": token.group(1)}, allow_redirects=False
    )
    assert resp.status == 303
    end_session = URL(resp.headers["Location"])
    assert str(end_session.with_query(None)) == f"{provider.url}/oauth2/end_session"
    assert end_session.query["post_logout_redirect_uri"] == f"{service}/admin/login"
    hint = jwt_claims(end_session.query["id_token_hint"])
    assert hint["sub"] == "alice"
    assert hint["aud"] in (CLIENT_ID, [CLIENT_ID])
    assert not has_session_cookie(http, service)
    # The provider's page confirms, then sends the browser back to our login page.
    confirm = await http.get(str(end_session))
    assert confirm.status == 200
    back = await http.post(
        f"{provider.url}/oauth2/end_session/confirm", data={"redirect_uri": f"{service}/admin/login"}
    )
    assert back.url.path == "/admin/login"
    assert not await signed_in(http, service)


async def test_a_provider_that_is_down_gives_a_clear_page(
    http: aiohttp.ClientSession, settings_factory: Callable[..., Settings]
) -> None:
    port, dead = free_port(), free_port()
    settings = settings_factory(
        port=port,
        session_secret=SESSION_SECRET,
        oidc_issuer=f"http://127.0.0.1:{dead}",
        oidc_client_id=CLIENT_ID,
        oidc_allowed_emails="alice@example.com",
    )
    async with running_service(settings) as service:
        await http.get(f"{service}/admin/login")
        resp = await http.get(f"{service}/admin/auth/start", allow_redirects=False)
        assert resp.status == 503
        assert "cannot be reached" in await resp.text()


# --- the local administrator ------------------------------------------------------------------------------


async def login_form_token(http: aiohttp.ClientSession, service: str) -> str:
    page = await (await http.get(f"{service}/admin/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    return token.group(1)


async def test_local_login_and_logout(http: aiohttp.ClientSession, service: str) -> None:
    token = await login_form_token(http, service)
    form: dict[str, Any] = {"csrf_token": token, "username": "admin", "password": "wrong"}
    resp = await http.post(f"{service}/admin/login", data={**form, "next": "/admin/customers"})
    assert resp.status == 401
    page = await resp.text()
    assert "Wrong username or password" in page
    assert 'name="next" value="/admin/customers"' in page  # the retry still leads there
    assert not await signed_in(http, service)
    form["password"] = ADMIN_PASSWORD
    assert (await http.post(f"{service}/admin/login", data={**form, "csrf_token": ""})).status == 403
    resp = await http.post(
        f"{service}/admin/login", data={**form, "next": "/admin/customers/"}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/admin/customers/"
    assert await signed_in(http, service)
    home = await (await http.get(f"{service}/admin/")).text()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', home)
    assert csrf is not None
    assert csrf.group(1) != token  # a new CSRF token (and session id) at sign-in
    resp = await http.post(
        f"{service}/admin/logout", data={"csrf_token": csrf.group(1)}, allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/admin/login"
    assert not await signed_in(http, service)


async def test_local_login_shares_the_api_rate_limit(
    http: aiohttp.ClientSession, settings_factory: Callable[..., Settings]
) -> None:
    port = free_port()
    settings = settings_factory(port=port, session_secret=SESSION_SECRET, login_attempts_per_minute=2)
    async with running_service(settings) as service:
        token = await login_form_token(http, service)
        wrong = {"csrf_token": token, "username": "admin", "password": "wrong"}
        assert (
            await http.post(f"{service}/auth/token", data={"username": "admin", "password": "x"})
        ).status == 401
        assert (await http.post(f"{service}/admin/login", data=wrong)).status == 401
        resp = await http.post(f"{service}/admin/login", data={**wrong, "password": ADMIN_PASSWORD})
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert "Too many attempts" in await resp.text()


async def test_local_login_can_be_turned_off(http: aiohttp.ClientSession, oidc_settings: Settings) -> None:
    settings = oidc_settings.model_copy(update={"admin_local_login": False})
    async with running_service(settings) as service:
        page = await (await http.get(f"{service}/admin/login")).text()
        assert 'name="password"' not in page
        assert "Sign in with" in page
        # No form, so no token on the page: read it from the session cookie, which this test can open.
        sealed = http.cookie_jar.filter_cookies(URL(f"{service}/admin/"))[COOKIE_NAME].value
        session = SessionCodec(SESSION_SECRET, time.time).open(sealed)
        assert session is not None
        form = {"csrf_token": session.csrf_token, "username": "admin", "password": ADMIN_PASSWORD}
        resp = await http.post(f"{service}/admin/login", data=form)
        assert resp.status == 403
        assert "turned off" in await resp.text()
        assert not await signed_in(http, service)


async def test_sign_ins_denials_and_sign_outs_are_logged_without_secrets(
    http: aiohttp.ClientSession, oidc_settings: Settings
) -> None:
    with captured_logs(oidc_settings) as logs:
        async with running_service(oidc_settings) as service:
            consent = await to_provider(http, service)
            resp = await http.post(consent, data={"sub": "alice"}, allow_redirects=False)
            code = URL(resp.headers["Location"]).query["code"]
            await http.get(resp.headers["Location"], allow_redirects=False)
            home = await (await http.get(f"{service}/admin/")).text()
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', home)
            assert csrf is not None
            out = await http.post(
                f"{service}/admin/logout", data={"csrf_token": csrf.group(1)}, allow_redirects=False
            )
            id_token = URL(out.headers["Location"]).query["id_token_hint"]
            await answer(http, await to_provider(http, service), {"sub": "bob"})
    [sign_in] = logs.events("admin sign-in")
    assert (sign_in["user"], sign_in["email"], sign_in["via"]) == ("alice", "alice@example.com", "oidc")
    [sign_out] = logs.events("admin sign-out")
    assert sign_out["user"] == "alice"
    [denied] = logs.events("admin sign-in denied")
    assert (denied["user"], denied["email"]) == ("bob", "bob@elsewhere.example")
    for secret in (code, id_token, csrf.group(1), CLIENT_SECRET):
        assert secret not in logs.text


# --- the provider client against a hand-made provider: its failures and key rotation -----------------------


@dataclass
class FakeProvider:
    """Discovery, JWKS and token endpoints whose answers each test sets."""

    url: str = ""
    issuer: str | None = None
    discovery_status: int = 200
    keys: list[RSAKey] = field(default_factory=list)
    token_answer: tuple[int, dict[str, Any]] = (200, {})
    jwks_fetches: int = 0
    hang: asyncio.Event | None = None

    def app(self) -> web.Application:
        async def discovery(request: web.Request) -> web.Response:
            if self.hang is not None:
                await self.hang.wait()
            body = {
                "issuer": self.issuer or self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
            }
            return web.json_response(body, status=self.discovery_status)

        async def jwks(request: web.Request) -> web.Response:
            self.jwks_fetches += 1
            return web.json_response(KeySet(list(self.keys)).as_dict(private=False))

        async def token(request: web.Request) -> web.Response:
            status, body = self.token_answer
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", discovery)
        app.router.add_get("/jwks", jwks)
        app.router.add_post("/token", token)
        return app


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeProvider:
    provider = FakeProvider()
    server = await aiohttp_server(provider.app(), host="127.0.0.1")
    provider.url = str(server.make_url("")).rstrip("/")
    return provider


@asynccontextmanager
async def client_of(
    fake: FakeProvider, clock: Callable[[], float] = time.time
) -> AsyncIterator[OidcProvider]:
    async with aiohttp.ClientSession() as http:
        yield OidcProvider(
            http,
            issuer=fake.url,
            client_id=CLIENT_ID,
            client_secret=None,
            redirect_uri="http://x/cb",
            clock=clock,
        )


def id_token(fake: FakeProvider, key: RSAKey, flow: OidcFlow) -> str:
    now = int(time.time())
    payload = {
        "iss": fake.url,
        "sub": "s",
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 60,
        "nonce": flow.nonce,
    }
    return jwt.encode({"alg": "RS256", "kid": key.kid}, payload, key)


async def test_discovery_must_name_our_issuer(fake: FakeProvider) -> None:
    fake.issuer = "https://impostor.example"
    async with client_of(fake) as provider:
        with pytest.raises(ProviderUnavailable, match="calls itself"):
            await provider.metadata()


async def test_discovery_errors_and_timeouts_are_unavailability(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.discovery_status = 502
    async with client_of(fake) as provider:
        with pytest.raises(ProviderUnavailable, match="answered 502"):
            await provider.metadata()
    fake.discovery_status, fake.hang = 200, asyncio.Event()
    monkeypatch.setattr(provider_module, "HTTP_TIMEOUT_S", 0.2)
    async with client_of(fake) as provider:
        with pytest.raises(ProviderUnavailable, match=r"did not answer within 0\.2 s"):
            await provider.metadata()
    fake.hang.set()


async def test_a_refused_code_is_a_refusal(fake: FakeProvider) -> None:
    fake.token_answer = (400, {"error": "invalid_grant"})
    async with client_of(fake) as provider:
        with pytest.raises(ProviderRefused, match="invalid_grant"):
            await provider.redeem("code", OidcFlow.start(time.time(), "/admin/"))


async def test_rotated_keys_are_fetched_again_but_not_for_every_forgery(fake: FakeProvider) -> None:
    old = RSAKey.generate_key(2048, parameters={"kid": "old"})
    new = RSAKey.generate_key(2048, parameters={"kid": "new"})
    fake.keys = [old]
    clock = Clock()
    flow = OidcFlow.start(clock.now, "/admin/")
    async with client_of(fake, clock) as provider:
        fake.token_answer = (200, {"id_token": id_token(fake, old, flow)})
        assert (await provider.redeem("c1", flow)).claims["sub"] == "s"
        assert fake.jwks_fetches == 1
        fake.keys = [old, new]  # the provider rotates; our cached set does not know "new" yet
        fake.token_answer = (200, {"id_token": id_token(fake, new, flow)})
        clock.now += JWKS_REFETCH_MIN_INTERVAL_S
        assert (await provider.redeem("c2", flow)).claims["sub"] == "s"
        assert fake.jwks_fetches == 2
        stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
        fake.token_answer = (200, {"id_token": id_token(fake, stranger, flow)})
        for _ in range(3):
            with pytest.raises(IdTokenError):
                await provider.redeem("c3", flow)
        assert fake.jwks_fetches == 2  # within the minute, no new fetch however many forgeries
