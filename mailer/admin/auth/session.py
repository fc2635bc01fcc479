"""The admin UI's session: a small record sealed in an encrypted, authenticated cookie (Fernet).

No server-side store: every process that shares MAILER_SESSION_SECRET reads every session, so the UI works
behind a load balancer. The expiry is absolute (set at sign-in, never extended) and is inside the sealed
record, so neither the browser nor an attacker can stretch it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailer.admin.auth.user import AdminUser

FORMAT_VERSION = 1
# Long enough to be unguessable (256 bits), short enough to keep the cookie small.
TOKEN_BYTES = 32
# The key is derived, not the secret itself: the same MAILER_SESSION_SECRET never keys anything else directly.
KEY_INFO = b"mailer admin session cookie v1"
# A visitor who has not signed in yet gets a session too (it carries the login form's CSRF token and the
# pending OIDC round trip); half an hour is ample to type a password or to pass the provider's page.
ANONYMOUS_LIFETIME_S = 30 * 60
# An OIDC round trip (our redirect to the provider and back) left unfinished for longer is refused.
FLOW_LIFETIME_S = 10 * 60
# Browsers drop cookies past about 4 KB; the id_token is kept only as logout's hint, so a token bulky with
# claims (hundreds of groups) is left out rather than lose the whole session.
MAX_ID_TOKEN_CHARS = 1800
# No sealed cookie older than this opens, whatever it says: the longest MAILER_ADMIN_SESSION_LIFETIME_S.
MAX_SEALED_AGE_S = 7 * 24 * 3600


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class OidcFlow:
    """One authorization request in flight: what the callback must see again (state, nonce, PKCE verifier)."""

    state: str
    nonce: str
    code_verifier: str
    expires_at: float
    return_to: str

    @classmethod
    def start(cls, now: float, return_to: str) -> OidcFlow:
        return cls(new_token(), new_token(), new_token(), now + FLOW_LIFETIME_S, return_to)


@dataclass(frozen=True)
class Session:
    """One browser's session: its id and CSRF token, and the user once signed in."""

    id: str
    csrf_token: str
    expires_at: float
    user: AdminUser | None = None
    id_token: str | None = None
    flow: OidcFlow | None = None

    @classmethod
    def anonymous(cls, now: float) -> Session:
        return cls(id=new_token(), csrf_token=new_token(), expires_at=now + ANONYMOUS_LIFETIME_S)

    @classmethod
    def signed_in(
        cls, user: AdminUser, now: float, lifetime_s: float, id_token: str | None = None
    ) -> Session:
        """A fresh session for a user: a new id and CSRF token; nothing from before sign-in carries over."""
        if id_token is not None and len(id_token) > MAX_ID_TOKEN_CHARS:
            id_token = None
        return cls(new_token(), new_token(), now + lifetime_s, user=user, id_token=id_token)

    def with_flow(self, flow: OidcFlow | None) -> Session:
        return replace(self, flow=flow)


def _to_json(session: Session) -> dict[str, Any]:
    user = session.user
    flow = session.flow
    return {
        "v": FORMAT_VERSION,
        "id": session.id,
        "csrf": session.csrf_token,
        "exp": session.expires_at,
        "user": None
        if user is None
        else {"sub": user.subject, "name": user.name, "email": user.email, "via": user.via},
        "idt": session.id_token,
        "flow": None
        if flow is None
        else {
            "state": flow.state,
            "nonce": flow.nonce,
            "verifier": flow.code_verifier,
            "exp": flow.expires_at,
            "to": flow.return_to,
        },
    }


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _from_json(data: Any) -> Session:
    """The session a sealed record holds; KeyError/TypeError/ValueError when it is not one of ours."""
    if data["v"] != FORMAT_VERSION:
        raise ValueError("another cookie format")
    user = data["user"]
    flow = data["flow"]
    return Session(
        id=str(data["id"]),
        csrf_token=str(data["csrf"]),
        expires_at=float(data["exp"]),
        user=None
        if user is None
        else AdminUser(
            subject=str(user["sub"]),
            name=str(user["name"]),
            email=_optional_str(user["email"]),
            via=str(user["via"]),
        ),
        id_token=_optional_str(data["idt"]),
        flow=None
        if flow is None
        else OidcFlow(
            str(flow["state"]), str(flow["nonce"]), str(flow["verifier"]), float(flow["exp"]), str(flow["to"])
        ),
    )


class SessionCodec:
    """Seals sessions into cookie values and back; a tampered, foreign or expired one opens to None."""

    def __init__(self, secret: str, clock: Callable[[], float]) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_INFO).derive(secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def seal(self, session: Session) -> str:
        payload = json.dumps(_to_json(session), separators=(",", ":")).encode()
        return self._fernet.encrypt_at_time(payload, int(self._clock())).decode("ascii")

    def open(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            payload = self._fernet.decrypt_at_time(
                value.encode("ascii"), ttl=MAX_SEALED_AGE_S, current_time=int(self._clock())
            )
            session = _from_json(json.loads(payload))
        except (InvalidToken, UnicodeError, ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= self._clock():
            return None
        if session.flow is not None and session.flow.expires_at <= self._clock():
            session = session.with_flow(None)
        return session
