"""The sign-in's configuration and per-request state, under typed keys of the admin sub-application."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from mailer.admin.auth.allowlist import AllowList
from mailer.admin.auth.provider import OidcProvider
from mailer.admin.auth.session import Session, SessionCodec

ADMIN_PREFIX = "/admin"
LOGIN_PATH = f"{ADMIN_PREFIX}/login"
HOME_PATH = f"{ADMIN_PREFIX}/"
CALLBACK_PATH = f"{ADMIN_PREFIX}/auth/callback"
START_PATH = f"{ADMIN_PREFIX}/auth/start"
LOGOUT_PATH = f"{ADMIN_PREFIX}/logout"
# Reachable without a session: the ways in, and the static files the login page itself needs.
PUBLIC_PATHS = frozenset({LOGIN_PATH, START_PATH, CALLBACK_PATH})
PUBLIC_PREFIXES = (f"{ADMIN_PREFIX}/static/", f"{ADMIN_PREFIX}/assets/")


@dataclass(frozen=True)
class AuthConfig:
    """Everything the middleware and the sign-in views need, built once from the settings."""

    codec: SessionCodec
    session_lifetime_s: float
    local_login: bool
    allow: AllowList | None  # None: no OIDC sign-in
    issuer: str | None
    client_id: str | None
    client_secret: str | None
    public_url: str
    secure_cookies: bool
    content_security_policy: str

    @property
    def oidc_enabled(self) -> bool:
        return self.issuer is not None

    @property
    def provider_name(self) -> str | None:
        """The sign-in button's name for the provider: its host (accounts.google.com, tenant.auth0.com)."""
        return urlsplit(self.issuer).hostname if self.issuer else None

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}{CALLBACK_PATH}"


class SessionSlot:
    """This request's session, and whether the response must write (or delete) the cookie."""

    def __init__(self, session: Session | None) -> None:
        self.session = session
        self.changed = False

    def replace(self, session: Session) -> None:
        self.session = session
        self.changed = True

    def clear(self) -> None:
        self.session = None
        self.changed = True


AUTH_CONFIG = web.AppKey("admin_auth_config", AuthConfig)
OIDC_PROVIDER = web.AppKey("admin_oidc_provider", OidcProvider)
SESSION_SLOT = web.RequestKey("admin_session", SessionSlot)


def redirect(location: str, status: int = 302) -> web.Response:
    """A redirect returned, not raised: the cookie and headers then go on it like on any response."""
    return web.Response(status=status, headers={"Location": location})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def safe_return_to(value: str | None) -> str:
    """Where to go after sign-in: a path inside the admin UI, never another site (no open redirect)."""
    if (
        not value
        or not value.startswith(HOME_PATH)
        or value.startswith("//")
        or "\\" in value
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)
        or value.startswith(LOGIN_PATH)
    ):
        return HOME_PATH
    return value
