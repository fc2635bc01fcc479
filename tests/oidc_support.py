"""A real OpenID Connect provider on loopback for tests: oidc-provider-mock in a thread, requests recorded."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import oidc_provider_mock
import werkzeug.serving
from aiohttp.test_utils import TestServer, unused_port

from mailer.app import create_app
from mailer.settings import Settings

CLIENT_ID = "mailer-admin"
CLIENT_SECRET = "mock-client-secret"
# How long shutting the provider's thread down may take before the test fails.
SHUTDOWN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Recorded:
    """One request the provider received: method, path, query and form (first values), credentials."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    authorization: str | None


@dataclass
class MockProvider:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)

    def to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [entry for entry in self.requests if entry.path == path]


def _first_values(raw: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(raw, keep_blank_values=True).items()}


def _recording(app: Any, provider: MockProvider) -> Any:
    """WSGI middleware: note each request's parameters, then hand it on with its body intact."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        form = {}
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            form = _first_values(body.decode())
        provider.record(
            Recorded(
                environ["REQUEST_METHOD"],
                environ["PATH_INFO"],
                _first_values(environ["QUERY_STRING"]),
                form,
                environ.get("HTTP_AUTHORIZATION"),
            )
        )
        return app(environ, start_response)

    return wsgi


def user(sub: str, **claims: object) -> oidc_provider_mock.User:
    return oidc_provider_mock.User(sub=sub, claims=dict(claims))


@contextmanager
def mock_provider(users: Iterable[oidc_provider_mock.User]) -> Iterator[MockProvider]:
    """The provider on 127.0.0.1 (a free port), serving in a thread until the block ends."""
    app = oidc_provider_mock.app(require_nonce=True, user_claims=tuple(users))
    server = werkzeug.serving.make_server("127.0.0.1", 0, app, threaded=True)
    provider = MockProvider(url=f"http://127.0.0.1:{server.server_port}")
    server.app = _recording(app, provider)
    thread = threading.Thread(target=server.serve_forever, name="oidc-provider-mock", daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(SHUTDOWN_TIMEOUT_S)
        server.server_close()
        assert not thread.is_alive(), "the mock OIDC provider did not stop"


def s256(verifier: str) -> str:
    """RFC 7636's S256 code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: for asserting what the service sent, never for trusting it."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


@asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[str]:
    """The whole service (without the sending engine) on 127.0.0.1 at settings.port; yields its base URL."""
    app = create_app(settings, with_engine=False)
    server = TestServer(app, host="127.0.0.1", port=settings.port)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        await server.close()


def free_port() -> int:
    """A port free on 127.0.0.1 now: the public URL (the redirect URI) must be known before the start."""
    return unused_port()


def oidc_service_settings(
    settings_factory: Callable[..., Settings], provider: MockProvider, session_secret: str, **overrides: Any
) -> Settings:
    """Settings for a service on a free port that signs in through `provider` as its one OIDC client."""
    port = free_port()
    return settings_factory(
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        session_secret=session_secret,
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        **overrides,
    )
