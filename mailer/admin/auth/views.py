"""The ways in and out of the admin UI: the login page and form, the OIDC round trip, logout.

Every sign-in, denial and sign-out is logged with the user; never a token, a code or a password.
"""

from __future__ import annotations

import hmac
import math

import aiohttp_jinja2
import structlog
from aiohttp import web

from mailer import keys
from mailer.admin.auth.config import (
    AUTH_CONFIG,
    LOGIN_PATH,
    OIDC_PROVIDER,
    SESSION_SLOT,
    AuthConfig,
    redirect,
    safe_return_to,
)
from mailer.admin.auth.idtoken import IdTokenError
from mailer.admin.auth.middleware import auth_context
from mailer.admin.auth.provider import OidcProvider, ProviderRefused, ProviderUnavailable
from mailer.admin.auth.session import OidcFlow, Session
from mailer.admin.auth.user import VIA_LOCAL, VIA_OIDC, AdminUser, user_from_claims
from mailer.client_address import request_client
from mailer.domain.errors import AuthenticationError, RateLimitedError
from mailer.observability.truncate import clip

log = structlog.get_logger(__name__)

# What the provider put in `error`/`error_description` is shown and logged, but only this much of it.
PROVIDER_ERROR_CHARS = 200


def _login_page(
    request: web.Request,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
    headers: dict[str, str] | None = None,
    return_to: str | None = None,
) -> web.Response:
    config = request.config_dict[AUTH_CONFIG]
    context = {
        "oidc_enabled": config.oidc_enabled,
        "provider_name": config.provider_name,
        "local_login": config.local_login,
        "error": error,
        "username": username,
        "next": safe_return_to(return_to or request.query.get("next")),
        **auth_context(request),
    }
    response = aiohttp_jinja2.render_template("login.html", request, context, status=status)
    response.headers.update(headers or {})
    return response


def _denied_page(request: web.Request, message: str) -> web.Response:
    return aiohttp_jinja2.render_template(
        "forbidden.html", request, {"message": message, **auth_context(request)}, status=403
    )


def _sign_in(request: web.Request, config: AuthConfig, user: AdminUser, id_token: str | None = None) -> None:
    slot = request[SESSION_SLOT]
    # A new session id and CSRF token: nothing an attacker planted before sign-in survives it.
    slot.replace(Session.signed_in(user, config.codec.now(), config.session_lifetime_s, id_token))
    log.info(
        "admin sign-in", user=user.subject, email=user.email, via=user.via, client=request_client(request)
    )


async def login_page(request: web.Request) -> web.Response:
    """GET /admin/login: the provider's button and/or the local form."""
    session = request[SESSION_SLOT].session
    if session is not None and session.user is not None:
        return redirect(safe_return_to(request.query.get("next")))
    return _login_page(request)


async def local_login(request: web.Request) -> web.Response:
    """POST /admin/login: the bootstrap administrator; the check and rate limit of POST /auth/token."""
    config = request.config_dict[AUTH_CONFIG]
    if not config.local_login:
        return _login_page(request, status=403, error="Signing in with a password is turned off here.")
    form = await request.post()
    username, password, form_next = form.get("username"), form.get("password"), form.get("next")
    return_to = safe_return_to(form_next if isinstance(form_next, str) else None)
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        return _login_page(
            request, status=400, error="Enter the username and the password.", return_to=return_to
        )
    address = request_client(request)
    try:
        request.config_dict[keys.TOKENS].check_login(username, password, address)
    except RateLimitedError as exc:
        wait_s = max(1, math.ceil(exc.retry_after_s))
        log.warning("admin sign-in rate limited", username=clip(username), via=VIA_LOCAL, client=address)
        return _login_page(
            request,
            status=429,
            error=f"Too many attempts. Try again in {wait_s} seconds.",
            username=username,
            headers={"Retry-After": str(wait_s)},
            return_to=return_to,
        )
    except AuthenticationError:
        log.warning("admin sign-in failed", username=clip(username), via=VIA_LOCAL, client=address)
        return _login_page(
            request, status=401, error="Wrong username or password.", username=username, return_to=return_to
        )
    _sign_in(request, config, AdminUser(subject=username, name=username, email=None, via=VIA_LOCAL))
    return redirect(return_to, 303)


def _provider(request: web.Request) -> OidcProvider:
    provider = request.config_dict.get(OIDC_PROVIDER)
    if provider is None:
        raise web.HTTPNotFound(text="OpenID Connect sign-in is not configured (MAILER_OIDC_ISSUER)")
    return provider


async def oidc_start(request: web.Request) -> web.Response:
    """GET /admin/auth/start: remember state, nonce and the PKCE verifier, then off to the provider."""
    config = request.config_dict[AUTH_CONFIG]
    provider = _provider(request)
    slot = request[SESSION_SLOT]
    now = config.codec.now()
    flow = OidcFlow.start(now, safe_return_to(request.query.get("next")))
    try:
        url = await provider.authorization_url(flow)
    except ProviderUnavailable as exc:
        log.warning("admin sign-in: provider unavailable", via=VIA_OIDC, reason=str(exc))
        return _login_page(request, status=503, error=f"Sign-in with the provider is unavailable: {exc}.")
    slot.replace((slot.session or Session.anonymous(now)).with_flow(flow))
    return redirect(url)


async def oidc_callback(request: web.Request) -> web.Response:
    """GET /admin/auth/callback: the provider's answer, verified and held against the allow-lists."""
    config = request.config_dict[AUTH_CONFIG]
    provider = _provider(request)
    slot = request[SESSION_SLOT]
    session = slot.session
    flow = session.flow if session is not None else None
    if session is None or flow is None:
        return _login_page(
            request,
            status=400,
            error="This sign-in expired or began in another browser (or cookies are blocked). Start again.",
        )
    # One answer per round trip: the flow is spent whatever happens next.
    slot.replace(session.with_flow(None))
    query = request.query
    if not hmac.compare_digest(query.get("state", "").encode(), flow.state.encode()):
        log.warning("admin sign-in refused: state mismatch", via=VIA_OIDC)
        return _login_page(
            request, status=400, error="This answer does not belong to this sign-in. Start again."
        )
    if "error" in query:
        described = (
            f"{query['error']} ({query['error_description']})" if query.get("error_description") else ""
        )
        reason = clip(described or query["error"], PROVIDER_ERROR_CHARS)
        log.warning("admin sign-in denied by the provider", via=VIA_OIDC, reason=reason)
        slot.clear()
        return _denied_page(request, f"The provider did not sign you in: {reason}.")
    code = query.get("code")
    if not code:
        return _login_page(request, status=400, error="The provider's answer has no code. Start again.")
    try:
        metadata = await provider.metadata()
        # RFC 9207: where the provider names itself in the answer, it must be our issuer (mix-up attacks).
        if "iss" in query and query["iss"] != metadata.issuer:
            log.warning("admin sign-in refused: answer from another issuer", via=VIA_OIDC)
            return _login_page(
                request, status=400, error="The answer came from another provider. Start again."
            )
        signed = await provider.redeem(code, flow)
    except ProviderUnavailable as exc:
        log.warning("admin sign-in: provider unavailable", via=VIA_OIDC, reason=str(exc))
        return _login_page(request, status=503, error=f"Sign-in with the provider is unavailable: {exc}.")
    except ProviderRefused as exc:
        log.warning("admin sign-in refused by the token endpoint", via=VIA_OIDC, reason=clip(str(exc), 100))
        return _login_page(request, status=400, error="The provider refused this sign-in. Start again.")
    except IdTokenError as exc:
        log.warning("admin sign-in refused: bad ID token", via=VIA_OIDC, reason=str(exc))
        slot.clear()
        return _denied_page(request, "The provider's answer could not be verified.")
    user = user_from_claims(signed.claims)
    assert config.allow is not None  # set whenever OIDC is
    verdict = config.allow.admits(signed.claims)
    if not verdict.admitted:
        log.warning(
            "admin sign-in denied", user=user.subject, email=user.email, via=VIA_OIDC, reason=verdict.reason
        )
        slot.clear()
        return _denied_page(
            request, f"{user.email or user.name} may not use this admin UI ({verdict.reason})."
        )
    _sign_in(request, config, user, signed.id_token)
    return redirect(flow.return_to)


async def logout(request: web.Request) -> web.Response:
    """POST /admin/logout: the session ends here, and at the provider when it offers end_session."""
    config = request.config_dict[AUTH_CONFIG]
    slot = request[SESSION_SLOT]
    session = slot.session
    slot.clear()
    target = LOGIN_PATH
    if session is not None and session.user is not None:
        user = session.user
        log.info("admin sign-out", user=user.subject, email=user.email, via=user.via)
        provider = request.config_dict.get(OIDC_PROVIDER)
        if user.via == VIA_OIDC and provider is not None:
            end_session = await provider.end_session_url(session.id_token, f"{config.public_url}{LOGIN_PATH}")
            target = end_session or target
    return redirect(target, 303)


def add_routes(router: web.UrlDispatcher) -> None:
    """Paths relative to the sub-application (mounted at /admin/)."""
    router.add_get(LOGIN_PATH.removeprefix("/admin"), login_page, name="login")
    router.add_post(LOGIN_PATH.removeprefix("/admin"), local_login)
    router.add_get("/auth/start", oidc_start, name="auth-start")
    router.add_get("/auth/callback", oidc_callback, name="auth-callback")
    router.add_post("/logout", logout, name="logout")
