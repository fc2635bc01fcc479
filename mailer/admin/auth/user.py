"""Who is signed in to the admin UI."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

VIA_OIDC = "oidc"
VIA_LOCAL = "local"


@dataclass(frozen=True)
class AdminUser:
    """A signed-in operator: the subject (provider's or local username), a display name, how they came in."""

    subject: str
    name: str
    email: str | None
    via: str  # VIA_OIDC or VIA_LOCAL


def user_from_claims(claims: Mapping[str, Any]) -> AdminUser:
    """The operator an ID token names; the name falls back to the username, the e-mail, the subject."""
    subject = str(claims["sub"])
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    name = next(
        (
            value
            for key in ("name", "preferred_username")
            if isinstance(value := claims.get(key), str) and value
        ),
        email or subject,
    )
    return AdminUser(subject=subject, name=name, email=email, via=VIA_OIDC)
