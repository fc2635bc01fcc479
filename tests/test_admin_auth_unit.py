"""The admin sign-in's pure parts and its gate: allow-lists, claims, ID tokens, sessions, CSRF, headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
import jinja2
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from pydantic import ValidationError

from mailer.admin.auth import AdminUser, setup_auth
from mailer.admin.auth.allowlist import AllowList, claim_groups, email_is_verified, normalise_email
from mailer.admin.auth.config import AUTH_CONFIG, safe_return_to
from mailer.admin.auth.idtoken import IdTokenError, UnknownKeyError, verify_id_token
from mailer.admin.auth.middleware import COOKIE_NAME
from mailer.admin.auth.session import MAX_ID_TOKEN_CHARS, OidcFlow, Session, SessionCodec
from mailer.admin.auth.user import user_from_claims
from mailer.settings import Settings

AiohttpClient = Callable[[web.Application], Any]
ISSUER = "https://issuer.example"
CLIENT = "mailer"
NONCE = "nonce-1234567890"
NOW = 1_800_000_000.0
SECRET = "unit-test-session-secret-long-enough-0123456789"

# --- allow-lists and claims -----------------------------------------------------------------------------


def allow(emails: str = "", groups: str = "", claim: str = "groups") -> AllowList:
    return AllowList.parse([e for e in emails.split(",") if e], [g for g in groups.split(",") if g], claim)


def test_exact_address_is_admitted_whatever_its_case() -> None:
    rule = allow("Alice@Example.com")
    assert rule.admits({"email": "alice@example.COM", "email_verified": True}).admitted
    assert not rule.admits({"email": "alice2@example.com", "email_verified": True}).admitted


def test_domain_pattern_admits_that_domain_only() -> None:
    rule = allow("*@corp.example")
    assert rule.admits({"email": "bob@corp.example"}).admitted
    for outsider in ("bob@evilcorp.example", "bob@sub.corp.example", "bob@corp.example.evil", "corp.example"):
        assert not rule.admits({"email": outsider}).admitted, outsider


def test_an_unverified_address_is_refused_even_when_listed() -> None:
    rule = allow("alice@example.com")
    verdict = rule.admits({"email": "alice@example.com", "email_verified": False})
    assert not verdict.admitted
    assert "not verified" in verdict.reason
    assert rule.admits({"email": "alice@example.com", "email_verified": "true"}).admitted
    assert not rule.admits({"email": "alice@example.com", "email_verified": "false"}).admitted


def test_a_group_admits_whatever_the_address() -> None:
    rule = allow("alice@example.com", "mailer-admins,ops")
    verdict = rule.admits({"email": "zed@else.example", "groups": ["staff", "ops"]})
    assert verdict.admitted
    assert verdict.reason == "allowed group ops"
    assert not rule.admits({"email": "zed@else.example", "groups": ["staff"]}).admitted
    assert not rule.admits({"groups": "staff"}).admitted


def test_group_claim_by_url_name_and_by_dotted_path() -> None:
    auth0 = allow(groups="admins", claim="https://mailer.example/groups")
    assert auth0.admits({"https://mailer.example/groups": ["admins"]}).admitted
    keycloak = allow(groups="admins", claim="realm_access.roles")
    assert keycloak.admits({"realm_access": {"roles": ["admins", "x"]}}).admitted
    assert not keycloak.admits({"realm_access": ["admins"]}).admitted


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["a", "b"], {"a", "b"}),
        ("a", {"a"}),
        (["a", 3, None, "", {"x": 1}], {"a"}),
        (42, set()),
        (None, set()),
        ({"a": True}, set()),
    ],
)
def test_claim_groups_takes_strings_only(value: object, expected: set[str]) -> None:
    assert claim_groups({"groups": value}, "groups") == expected


@pytest.mark.parametrize(
    "entry", ["not-an-address", "*@", "*@a@b", "a@*.example", "@example.com", "a b@x.io"]
)
def test_malformed_allow_list_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValidationError, match="not an e-mail address or a \\*@domain pattern"):
        Settings(oidc_issuer=ISSUER, oidc_client_id=CLIENT, oidc_allowed_emails=f"ok@example.com,{entry}")
    with pytest.raises(ValueError, match="no"):
        allow(entry)


def test_missing_email_verified_is_believed() -> None:
    assert email_is_verified({})
    assert not email_is_verified({"email_verified": 0})


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_domain = st.builds(lambda a, b: f"{a}.{b}", _label, _label)


@given(local=_label, domain=_domain, other=_domain)
def test_domain_pattern_property(local: str, domain: str, other: str) -> None:
    rule = allow(f"*@{domain}")
    assert rule.admits({"email": f"{local}@{domain.upper()}"}).admitted
    assert rule.admits({"email": f"{local}@{other}"}).admitted == (other == domain)


@given(st.text(max_size=40))
def test_normalise_email_never_yields_two_ats(value: str) -> None:
    email = normalise_email(value)
    assert email is None or (email.count("@") == 1 and not email.startswith("@") and not email.endswith("@"))


def test_user_from_claims_prefers_the_name() -> None:
    assert user_from_claims({"sub": "s1", "name": "Alice", "email": "a@x.io"}) == AdminUser(
        "s1", "Alice", "a@x.io", "oidc"
    )
    assert user_from_claims({"sub": "s1", "preferred_username": "al"}).name == "al"
    assert user_from_claims({"sub": "s1", "email": "a@x.io"}).name == "a@x.io"
    assert user_from_claims({"sub": "s1", "email": 5}) == AdminUser("s1", "s1", None, "oidc")


# --- ID tokens ------------------------------------------------------------------------------------------

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
KEYS = KeySet([RSA, EC])
PUBLIC_KEYS = KeySet.import_key_set(KEYS.as_dict(private=False))


def claims(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": CLIENT,
        "exp": int(NOW) + 300,
        "iat": int(NOW),
        "nonce": NONCE,
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}


def signed(payload: dict[str, Any], key: Any = RSA, alg: str = "RS256", kid: str | None = None) -> str:
    return jwt.encode({"alg": alg, "kid": kid or key.kid}, payload, key)


def verify(token: str, nonce: str = NONCE, now: float = NOW) -> dict[str, Any]:
    return verify_id_token(
        token, PUBLIC_KEYS, issuer=ISSUER, client_id=CLIENT, nonce=nonce, clock=lambda: now
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_good_token_verifies_with_rsa_and_ec() -> None:
    assert verify(signed(claims()))["sub"] == "user-1"
    assert verify(signed(claims(), EC, "ES256"))["sub"] == "user-1"
    assert verify(signed(claims(aud=[CLIENT, "other"], azp=CLIENT)))["sub"] == "user-1"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (claims(iss="https://evil.example"), "claims"),
        (claims(aud="another-client"), "another client"),
        (claims(aud=[CLIENT, "other"]), "azp"),
        (claims(nonce="replayed"), "nonce"),
        (claims(nonce=None), "nonce"),
        (claims(exp=int(NOW) - 3600), "claims"),
        (claims(iat=None), "claims"),
        (claims(sub=None), "claims"),
    ],
)
def test_bad_claims_are_refused(payload: dict[str, Any], words: str) -> None:
    with pytest.raises(IdTokenError, match=words):
        verify(signed(payload))


@pytest.mark.parametrize("audience", [5, 1.5, True, {CLIENT: 1}, [CLIENT, 5], [[CLIENT]]])
def test_an_audience_of_another_type_is_refused(audience: object) -> None:
    with pytest.raises(IdTokenError, match="aud"):
        verify(signed(claims(aud=audience, azp=CLIENT)))


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(IdTokenError):
        verify(token)


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    # The classic confusion: the provider's public key used as an HMAC secret.
    public_pem = RSA.as_pem(private=False)
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{b64(json.dumps(claims()).encode())}"
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(IdTokenError):
        verify(f"{signing_input}.{b64(signature)}")


def test_a_token_signed_by_another_key_is_refused() -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    with pytest.raises(IdTokenError, match="signature"):
        verify(signed(claims(), impostor))


def test_an_unknown_key_id_asks_for_fresh_keys() -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "rotated"})
    with pytest.raises(UnknownKeyError):
        verify(signed(claims(), stranger))


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b.c.d.e", "...."])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(IdTokenError):
        verify(token)


def test_expiry_allows_a_minute_of_clock_skew() -> None:
    token = signed(claims(exp=int(NOW) - 30))
    assert verify(token)["sub"] == "user-1"
    with pytest.raises(IdTokenError):
        verify(token, now=NOW + 120)


# --- sessions -------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ALICE = AdminUser("alice", "Alice", "alice@example.com", "oidc")


def test_a_session_survives_the_round_trip() -> None:
    codec = SessionCodec(SECRET, Clock())
    session = Session.signed_in(ALICE, NOW, 3600, id_token="header.payload.signature")
    flowing = session.with_flow(OidcFlow.start(NOW, "/admin/mailouts/"))
    assert codec.open(codec.seal(flowing)) == flowing


def test_sign_in_makes_a_new_session_id_and_csrf_token() -> None:
    before = Session.anonymous(NOW)
    after = Session.signed_in(ALICE, NOW, 3600)
    assert after.id != before.id
    assert after.csrf_token != before.csrf_token
    assert after.expires_at == NOW + 3600


def test_expiry_is_absolute() -> None:
    clock = Clock()
    codec = SessionCodec(SECRET, clock)
    sealed = codec.seal(Session.signed_in(ALICE, NOW, 3600))
    clock.now = NOW + 3599
    assert codec.open(sealed) is not None
    clock.now = NOW + 3600
    assert codec.open(sealed) is None


def test_an_expired_flow_is_dropped_but_the_session_kept() -> None:
    clock = Clock()
    codec = SessionCodec(SECRET, clock)
    sealed = codec.seal(Session.anonymous(NOW).with_flow(OidcFlow.start(NOW, "/admin/")))
    clock.now = NOW + 11 * 60
    opened = codec.open(sealed)
    assert opened is not None
    assert opened.flow is None


def test_a_tampered_or_foreign_cookie_opens_to_nothing() -> None:
    codec = SessionCodec(SECRET, Clock())
    sealed = codec.seal(Session.signed_in(ALICE, NOW, 3600))
    for position in (10, len(sealed) // 2, len(sealed) - 5):
        flipped = "A" if sealed[position] != "A" else "B"
        assert codec.open(sealed[:position] + flipped + sealed[position + 1 :]) is None
    assert SessionCodec(SECRET + "x", Clock()).open(sealed) is None
    for junk in (None, "", "not-a-cookie", "é" * 10):
        assert codec.open(junk) is None


def test_a_huge_id_token_is_left_out_of_the_cookie() -> None:
    assert Session.signed_in(ALICE, NOW, 60, id_token="x" * (MAX_ID_TOKEN_CHARS + 1)).id_token is None


@given(st.text(max_size=60))
def test_return_to_never_leaves_the_admin_ui(value: str) -> None:
    target = safe_return_to(value)
    assert target.startswith("/admin/")
    assert not target.startswith("//")
    assert "\\" not in target


def test_return_to_keeps_admin_paths() -> None:
    assert safe_return_to("/admin/mailouts/7?tab=errors") == "/admin/mailouts/7?tab=errors"
    for bad in ("https://evil.example/", "//evil.example/admin/", "/admin/login?next=x", "/api/", None):
        assert safe_return_to(bad) == "/admin/"


# --- settings -------------------------------------------------------------------------------------------


def test_no_way_to_sign_in_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="nobody could sign in"):
        Settings(admin_local_login=False)


def test_oidc_needs_a_client_and_an_allow_list() -> None:
    with pytest.raises(ValidationError, match="MAILER_OIDC_CLIENT_ID"):
        Settings(oidc_issuer=ISSUER, oidc_allowed_emails="a@b.example")
    with pytest.raises(ValidationError, match="ALLOWED_EMAILS or MAILER_OIDC_ALLOWED_GROUPS"):
        Settings(oidc_issuer=ISSUER, oidc_client_id=CLIENT)
    settings = Settings(
        oidc_issuer=ISSUER, oidc_client_id=CLIENT, oidc_allowed_groups="a, b", admin_local_login=False
    )
    assert settings.oidc_allowed_groups == ["a", "b"]


# --- the gate: a small admin app with one page and one change ---------------------------------------------

STUB_BASE = (
    "<!doctype html><title>{% block title %}{% endblock %}</title>"
    "<main>{% block content %}{% endblock %}</main>"
)


@dataclass
class Gate:
    """The admin sub-application with only the sign-in and one page that counts its changes."""

    app: web.Application
    codec: SessionCodec
    changes: int = 0


def gate_app(public_url: str | None = None) -> Gate:
    settings = Settings(session_secret=SECRET, public_url=public_url)
    admin = web.Application()
    loader = jinja2.ChoiceLoader(
        [jinja2.DictLoader({"base.html": STUB_BASE}), jinja2.PackageLoader("mailer.admin", "templates")]
    )
    aiohttp_jinja2.setup(admin, loader=loader, autoescape=True)
    setup_auth(admin, settings)
    parent = web.Application()
    gate = Gate(parent, admin[AUTH_CONFIG].codec)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="the page")

    async def change(request: web.Request) -> web.Response:
        gate.changes += 1
        return web.Response(text="changed")

    admin.router.add_get("/things", page)
    admin.router.add_post("/things", change)
    parent.add_subapp("/admin/", admin)
    return gate


def sign_in(client: TestClient[Any, Any], gate: Gate, session: Session) -> None:
    client.session.cookie_jar.update_cookies({COOKIE_NAME: gate.codec.seal(session)})


async def test_no_session_redirects_pages_and_refuses_scripts(aiohttp_client: AiohttpClient) -> None:
    gate = gate_app()
    client = await aiohttp_client(gate.app)
    resp = await client.get("/admin/things?x=1", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/admin/login?next=/admin/things?x%3D1"
    resp = await client.get("/admin/things", headers={"Accept": "text/html-fragment"})
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"


async def test_a_session_opens_the_page_with_strict_headers(aiohttp_client: AiohttpClient) -> None:
    gate = gate_app()
    client = await aiohttp_client(gate.app)
    sign_in(client, gate, Session.signed_in(ALICE, time.time(), 3600))
    resp = await client.get("/admin/things")
    assert resp.status == 200
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Referrer-Policy"] == "same-origin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_expired_and_tampered_sessions_count_as_none(aiohttp_client: AiohttpClient) -> None:
    gate = gate_app()
    client = await aiohttp_client(gate.app)
    now = time.time()
    sign_in(client, gate, Session("id", "csrf", now - 1, user=ALICE))
    assert (await client.get("/admin/things", allow_redirects=False)).status == 302
    sign_in(client, gate, Session.signed_in(ALICE, now, 3600))
    sealed = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))[COOKIE_NAME].value
    client.session.cookie_jar.update_cookies({COOKIE_NAME: sealed[:-6] + "AAAAAA"})
    assert (await client.get("/admin/things", allow_redirects=False)).status == 302


async def test_a_change_needs_the_sessions_csrf_token(aiohttp_client: AiohttpClient) -> None:
    gate = gate_app()
    client = await aiohttp_client(gate.app)
    session = Session.signed_in(ALICE, time.time(), 3600)
    sign_in(client, gate, session)
    refused = [
        await client.post("/admin/things", data={"x": "1"}),
        await client.post("/admin/things", data={"csrf_token": "guess"}),
        await client.post("/admin/things", headers={"X-CSRF-Token": Session.anonymous(0).csrf_token}),
        await client.post("/admin/things", json={"csrf_token": session.csrf_token}),
    ]
    assert [r.status for r in refused] == [403, 403, 403, 403]
    assert "expired or did not come from this site" in await refused[0].text()
    assert gate.changes == 0
    assert (await client.post("/admin/things", data={"csrf_token": session.csrf_token})).status == 200
    assert (await client.post("/admin/things", headers={"X-CSRF-Token": session.csrf_token})).status == 200
    assert gate.changes == 2


async def test_a_refused_script_gets_problem_json(aiohttp_client: AiohttpClient) -> None:
    gate = gate_app()
    client = await aiohttp_client(gate.app)
    sign_in(client, gate, Session.signed_in(ALICE, time.time(), 3600))
    resp = await client.post("/admin/things", headers={"X-Requested-With": "fetch"})
    assert resp.status == 403
    assert (await resp.json())["status"] == 403
    assert gate.changes == 0


@pytest.mark.parametrize(("public_url", "secure"), [(None, False), ("https://admin.example", True)])
async def test_the_cookie_is_httponly_lax_and_secure_on_https(
    aiohttp_client: AiohttpClient, public_url: str | None, secure: bool
) -> None:
    gate = gate_app(public_url)
    client = await aiohttp_client(gate.app)
    resp = await client.get("/admin/login")
    assert resp.status == 200
    cookie = resp.cookies[COOKIE_NAME]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/admin"
    assert bool(cookie["secure"]) is secure
    assert 0 < int(cookie["max-age"]) <= 30 * 60
