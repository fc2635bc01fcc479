"""The OpenID Connect provider as the admin UI sees it: discovery, keys, the authorization URL, the code.

Discovery (`{issuer}/.well-known/openid-configuration`) and the JWKS are fetched on first use and cached, so
the service starts while the provider is down; every request has a timeout, and every way the provider can
fail is a ProviderUnavailable with a sentence for the sign-in page.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mailer.admin.auth.idtoken import UnknownKeyError, verify_id_token
from mailer.admin.auth.session import OidcFlow

DISCOVERY_PATH = "/.well-known/openid-configuration"
SCOPES = ("openid", "email", "profile")
# A sign-in page that hangs is worse than one that says the provider is not answering.
HTTP_TIMEOUT_S = 5.0
# Provider metadata changes rarely; an hour bounds how long a changed endpoint goes unnoticed.
METADATA_TTL_S = 3600.0
# A token signed with an unknown key id makes us fetch the JWKS again (key rotation), but no more often than
# this: a stream of forged tokens must not turn into a stream of requests to the provider.
JWKS_REFETCH_MIN_INTERVAL_S = 60.0
# Discovery documents and key sets are a few kilobytes; anything far bigger is not one.
MAX_RESPONSE_BYTES = 1024 * 1024


class ProviderUnavailable(Exception):
    """The provider did not answer, or not as OpenID Connect says; the message is for the sign-in page."""


class ProviderRefused(Exception):
    """The provider answered the token request with an OAuth error (an expired or replayed code)."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None

    @classmethod
    def parse(cls, document: Any, configured_issuer: str) -> ProviderMetadata:
        if not isinstance(document, dict):
            raise ProviderUnavailable("the provider's discovery document is not a JSON object")
        fields = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        missing = [name for name in fields if not isinstance(document.get(name), str)]
        if missing:
            raise ProviderUnavailable(f"the provider's discovery document lacks {', '.join(missing)}")
        # OIDC Discovery 4.3: the document's issuer must be the one we asked; a trailing slash is forgiven
        # here (people type it either way), and the document's own spelling is what ID tokens must carry.
        if document["issuer"].rstrip("/") != configured_issuer.rstrip("/"):
            raise ProviderUnavailable(
                f"the provider calls itself {document['issuer']!r}, "
                f"not MAILER_OIDC_ISSUER {configured_issuer!r}"
            )
        end_session = document.get("end_session_endpoint")
        return cls(
            issuer=document["issuer"],
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            end_session_endpoint=end_session if isinstance(end_session, str) else None,
        )


@dataclass(frozen=True)
class SignedIn:
    """What a redeemed code proves: the ID token's verified claims, and the token itself (logout's hint)."""

    claims: dict[str, Any]
    id_token: str


class OidcProvider:
    """One configured issuer and our client registered there."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        clock: Callable[[], float],
    ) -> None:
        self._http = http
        self._issuer = issuer
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        # One fetch at a time: a burst of sign-ins after a restart makes one discovery request, not many.
        self._lock = asyncio.Lock()

    @property
    def issuer(self) -> str:
        return self._issuer

    async def metadata(self) -> ProviderMetadata:
        async with self._lock:
            if self._metadata is None or self._clock() - self._metadata_at > METADATA_TTL_S:
                url = self._issuer.rstrip("/") + DISCOVERY_PATH
                self._metadata = ProviderMetadata.parse(await self._get_json(url), self._issuer)
                self._metadata_at = self._clock()
            return self._metadata

    async def _key_set(self, *, refetch: bool) -> KeySet:
        metadata = await self.metadata()
        async with self._lock:
            stale = self._keys is None or self._clock() - self._keys_at > METADATA_TTL_S
            may_refetch = refetch and self._clock() - self._keys_at >= JWKS_REFETCH_MIN_INTERVAL_S
            if stale or may_refetch or self._keys is None:
                document = await self._get_json(metadata.jwks_uri)
                try:
                    self._keys = KeySet.import_key_set(document)  # type: ignore[arg-type]  # checked by joserfc
                except (JoseError, ValueError, TypeError, KeyError):
                    raise ProviderUnavailable(
                        "the provider's key set (jwks_uri) is not a valid JWKS"
                    ) from None
                self._keys_at = self._clock()
            return self._keys

    async def authorization_url(self, flow: OidcFlow) -> str:
        metadata = await self.metadata()
        url: str = prepare_grant_uri(
            metadata.authorization_endpoint,
            self._client_id,
            "code",
            redirect_uri=self._redirect_uri,
            scope=list(SCOPES),
            state=flow.state,
            nonce=flow.nonce,
            code_challenge=create_s256_code_challenge(flow.code_verifier),
            code_challenge_method="S256",
        )
        return url

    async def redeem(self, code: str, flow: OidcFlow) -> SignedIn:
        """Exchange the code (with the PKCE verifier) and verify the ID token; IdTokenError when it fails."""
        metadata = await self.metadata()
        extra: dict[str, str] = {} if self._client_secret else {"client_id": self._client_id}
        body: str = prepare_token_request(
            "authorization_code",
            code=code,
            redirect_uri=self._redirect_uri,
            code_verifier=flow.code_verifier,
            **extra,
        )
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._client_secret:
            # RFC 6749 2.3.1: the id and secret are form-encoded before they go into Basic authentication.
            headers["Authorization"] = aiohttp.encode_basic_auth(
                quote(self._client_id, safe=""), quote(self._client_secret, safe="")
            )
        answer = await self._request_json("POST", metadata.token_endpoint, data=body, headers=headers)
        if "error" in answer:
            raise ProviderRefused(str(answer["error"]))
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderUnavailable("the provider's token response has no id_token")
        try:
            claims = self._verify(id_token, await self._key_set(refetch=False), metadata, flow)
        except UnknownKeyError:
            claims = self._verify(id_token, await self._key_set(refetch=True), metadata, flow)
        return SignedIn(claims, id_token)

    def _verify(
        self, id_token: str, keys: KeySet, metadata: ProviderMetadata, flow: OidcFlow
    ) -> dict[str, Any]:
        return verify_id_token(
            id_token,
            keys,
            issuer=metadata.issuer,
            client_id=self._client_id,
            nonce=flow.nonce,
            clock=self._clock,
        )

    async def end_session_url(self, id_token: str | None, post_logout_redirect_uri: str) -> str | None:
        """Where the browser goes so the provider ends its session too; None when it offers none."""
        try:
            metadata = await self.metadata()
        except ProviderUnavailable:
            return None
        if metadata.end_session_endpoint is None:
            return None
        params = {"client_id": self._client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token is not None:
            params["id_token_hint"] = id_token
        separator = "&" if "?" in metadata.end_session_endpoint else "?"
        return f"{metadata.end_session_endpoint}{separator}{urlencode(params)}"

    async def _get_json(self, url: str) -> dict[str, Any]:
        return await self._request_json("GET", url)

    async def _request_json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            async with (
                asyncio.timeout(HTTP_TIMEOUT_S),
                self._http.request(method, url, allow_redirects=False, **kwargs) as response,
            ):
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                status = response.status
        except TimeoutError:
            raise ProviderUnavailable(
                f"the sign-in provider did not answer within {HTTP_TIMEOUT_S:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(
                f"the sign-in provider cannot be reached ({type(exc).__name__})"
            ) from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ProviderUnavailable("the sign-in provider's answer is too large")
        try:
            document: Any = json.loads(raw)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"the sign-in provider answered {status} without a JSON object")
        # The token endpoint answers errors as 400 with {"error": ...}; that is a refusal, not an outage.
        if status >= 500 or (status >= 400 and "error" not in document):
            raise ProviderUnavailable(f"the sign-in provider answered {status}")
        return document
