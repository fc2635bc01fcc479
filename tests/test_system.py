"""Index, liveness, readiness, and the built-in sandbox made impossible to miss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError

from mailer.api.system import provider_name
from mailer.app import create_app
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET, AiohttpClient
from tests.process_support import PYTHON, Processes, _clean_env

REAL_PROVIDER = "https://user:pw@provider.example.com:8443/v1"
PROVIDER_TOKEN = "provider-token-never-shown"


async def test_index_names_the_service_and_the_sandbox(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/")
    body = await resp.json()
    assert body["service"] == "mailer"
    assert body["links"]["docs"] == "/docs/"
    assert body["provider"] == "sandbox"


async def test_healthz(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


async def test_readyz_reports_the_database_and_the_provider(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["checks"]["database"] == "ok"
    assert body["provider"] == "sandbox"


async def test_unknown_route_is_problem_json(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/nowhere")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_a_real_provider_is_named_by_its_host_only(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(provider_url=REAL_PROVIDER, provider_token=PROVIDER_TOKEN)
    client = await aiohttp_client(create_app(settings, with_engine=False))
    for path in ("/", "/readyz"):
        resp = await client.get(path)
        text = await resp.text()
        assert (await resp.json())["provider"] == "provider.example.com", path
        for secret in (PROVIDER_TOKEN, "user", "pw", "/v1"):
            assert secret not in text, (path, secret)
    metrics = await (await client.get("/metrics")).text()
    assert "mailer_provider_sandbox 0.0" in metrics


async def test_the_sandbox_shows_in_metrics_and_a_warning(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings]
) -> None:
    with structlog.testing.capture_logs() as logs:
        app = create_app(settings_factory(), with_engine=False)
    warnings = [e for e in logs if e["log_level"] == "warning" and "sandbox" in e["event"]]
    assert len(warnings) == 1
    assert "MAILER_PROVIDER_URL" in warnings[0]["event"]
    client = await aiohttp_client(app)
    assert "mailer_provider_sandbox 1.0" in await (await client.get("/metrics")).text()
    assert REGISTRY.get_sample_value("mailer_provider_sandbox") == 1.0


def _settings(**values: Any) -> Settings:
    return Settings(database_url="sqlite:///unused.db", admin_password=ADMIN_PASSWORD, **values)


def test_sandbox_is_the_explicit_spelling_of_the_default() -> None:
    assert _settings(provider_url="sandbox").provider_url is None
    assert provider_name(_settings(provider_url="sandbox")) == "sandbox"
    assert provider_name(_settings()) == "sandbox"
    assert provider_name(_settings(provider_url="http://127.0.0.1:9000")) == "127.0.0.1"


@pytest.mark.parametrize("provider", [None, "sandbox"])
def test_production_refuses_the_sandbox(provider: str | None) -> None:
    strong = {"jwt_secret": JWT_SECRET, "session_secret": JWT_SECRET}
    with pytest.raises(ValidationError, match="MAILER_PROVIDER_URL"):
        _settings(env="production", provider_url=provider, **strong)
    assert _settings(env="production", provider_url=REAL_PROVIDER, **strong).env == "production"


async def test_run_py_in_production_on_the_sandbox_exits_naming_the_variable(procs: Processes) -> None:
    env = {
        **_clean_env(),
        "MAILER_ENV": "production",
        "MAILER_PROVIDER_URL": "sandbox",
        "MAILER_JWT_SECRET": JWT_SECRET,
        "MAILER_SESSION_SECRET": JWT_SECRET,
        "MAILER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MAILER_DATABASE_URL": f"sqlite:///{procs.workdir / 'never.db'}",
        "MAILER_PORT": "0",
    }
    child = procs.spawn("production", [PYTHON, "run.py"], env)
    assert await child.wait_exit(30.0) == 2
    assert "MAILER_PROVIDER_URL" in child.log_tail()
    assert not (procs.workdir / "never.db").exists()
