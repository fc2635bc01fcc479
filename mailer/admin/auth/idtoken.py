"""Verifying an OpenID Connect ID token (joserfc): signature by the provider's JWKS, then the claims.

Pure: the key set, the expected values and the clock come in; nothing here does I/O.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

# Asymmetric signatures only. Never `none`; never HS*: with an HMAC algorithm allowed, a forger could sign a
# token with the provider's *public* key as the HMAC secret, and a careless verifier would take it.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
# Clock difference tolerated between us and the provider; OIDC ID tokens usually live 5 to 60 minutes.
LEEWAY_S = 60
# A compact JWS has three dot-separated parts; five would be an encrypted JWE, which we never asked for.
JWS_PARTS = 3


class IdTokenError(Exception):
    """The ID token is not one we can trust; the message says which check failed (never the token)."""


class UnknownKeyError(IdTokenError):
    """Signed with a key id not in the key set we hold: the provider may have rotated its keys."""


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    clock: Callable[[], float],
) -> dict[str, Any]:
    """The claims of a valid ID token for us, else IdTokenError."""
    if token.count(".") != JWS_PARTS - 1:
        raise IdTokenError("the ID token is not a signed JWT")
    try:
        decoded = jwt.decode(token, keys, algorithms=ALLOWED_ALGORITHMS)
    except InvalidKeyIdError:
        raise UnknownKeyError("the ID token is signed with a key the provider does not list") from None
    except JoseError as exc:
        raise IdTokenError(f"the ID token's signature does not verify ({exc.error})") from None
    except ValueError:
        raise IdTokenError("the ID token is malformed") from None
    claims: dict[str, Any] = dict(decoded.claims)
    registry = JWTClaimsRegistry(
        now=lambda: int(clock()),
        leeway=LEEWAY_S,
        iss={"essential": True, "value": issuer},
        sub={"essential": True},
        aud={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise IdTokenError(f"the ID token's claims do not hold ({exc.description or exc.error})") from None
    _check_audience(claims, client_id)
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise IdTokenError("the ID token's nonce is not the one this sign-in sent")
    return claims


def _check_audience(claims: dict[str, Any], client_id: str) -> None:
    audience = claims["aud"]
    # RFC 7519 4.1.3: a string or an array of strings. Anything else (a number, an object whose keys would
    # pass for audiences) is refused, never iterated.
    if isinstance(audience, str):
        audiences = [audience]
    elif isinstance(audience, list) and all(isinstance(a, str) for a in audience):
        audiences = audience
    else:
        raise IdTokenError("the ID token's audience (aud) is neither a string nor a list of strings")
    if client_id not in audiences:
        raise IdTokenError("the ID token was issued to another client (aud)")
    # OIDC Core 3.1.3.7: with several audiences, azp names the one the token was issued for.
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise IdTokenError("the ID token has several audiences and azp is not this client")
