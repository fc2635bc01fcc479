"""`setup_auth`: the sign-in's middleware, response headers, routes and provider client on the admin app."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web

from mailer.admin.auth import views
from mailer.admin.auth.allowlist import AllowList
from mailer.admin.auth.config import AUTH_CONFIG, OIDC_PROVIDER, AuthConfig
from mailer.admin.auth.middleware import admin_auth_middleware, content_security_policy, on_response_prepare
from mailer.admin.auth.provider import HTTP_TIMEOUT_S, OidcProvider
from mailer.admin.auth.session import SessionCodec
from mailer.observability import logging as log_setup
from mailer.settings import Settings, generate_secret

log = structlog.get_logger(__name__)


def _session_secret(settings: Settings) -> str:
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    log.warning(
        "MAILER_SESSION_SECRET is unset: admin sessions use a random per-process key and end at restart; "
        "set it when several processes serve the admin UI"
    )
    secret = generate_secret()
    log_setup.register_secret(secret)
    return secret


def auth_config(settings: Settings) -> AuthConfig:
    public_url = settings.public_base_url
    issuer = settings.oidc_issuer
    allow = None
    form_targets = ""
    if issuer is not None:
        try:
            allow = AllowList.parse(
                settings.oidc_allowed_emails, settings.oidc_allowed_groups, settings.oidc_groups_claim
            )
        except ValueError as exc:
            raise ValueError(f"MAILER_OIDC_ALLOWED_EMAILS: {exc}") from None
        parts = urlsplit(issuer)
        form_targets = f" {parts.scheme}://{parts.netloc}"
    secret = settings.oidc_client_secret
    return AuthConfig(
        codec=SessionCodec(_session_secret(settings), time.time),
        session_lifetime_s=settings.admin_session_lifetime_s,
        local_login=settings.admin_local_login,
        allow=allow,
        issuer=issuer,
        client_id=settings.oidc_client_id,
        client_secret=secret.get_secret_value() if secret is not None else None,
        public_url=public_url,
        secure_cookies=public_url.startswith("https://"),
        content_security_policy=content_security_policy(form_targets),
    )


async def oidc_provider_ctx(app: web.Application) -> AsyncIterator[None]:
    """The HTTP client that talks to the provider, for the life of the app."""
    config = app[AUTH_CONFIG]
    assert config.issuer is not None
    assert config.client_id is not None
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, headers={"Accept": "application/json"}) as http:
        app[OIDC_PROVIDER] = OidcProvider(
            http,
            issuer=config.issuer,
            client_id=config.client_id,
            client_secret=config.client_secret,
            redirect_uri=config.redirect_uri,
            clock=time.time,
        )
        yield


def setup_auth(admin_app: web.Application, settings: Settings) -> None:
    """Sign-in for the admin sub-application; call it before the pages' routes are added."""
    config = auth_config(settings)
    admin_app[AUTH_CONFIG] = config
    # First of the sub-application's middlewares, whenever setup_auth is called: nothing of a page (its
    # template context processors included) runs for a request the gate refuses.
    admin_app.middlewares.insert(0, admin_auth_middleware)
    admin_app.on_response_prepare.append(on_response_prepare)
    if config.oidc_enabled:
        admin_app.cleanup_ctx.append(oidc_provider_ctx)
    views.add_routes(admin_app.router)
