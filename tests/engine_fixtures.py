"""The fixtures of the engine's end-to-end tests: a fault-free sandbox provider and the service sending to it.

Imported into the test modules that use them (`from tests.engine_fixtures import sandbox_fixture, …`); the
fixtures are named `sandbox` and `service` there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from mailer.settings import Settings
from tests.conftest import AiohttpClient
from tests.engine_support import FAST_ENGINE, Sandbox, Service, start_sandbox, start_service


@pytest.fixture(name="sandbox")
async def sandbox_fixture() -> AsyncIterator[Sandbox]:
    box = await start_sandbox()
    yield box
    await box.server.close()


@pytest.fixture(name="service")
async def service_fixture(
    aiohttp_client: AiohttpClient, settings_factory: Callable[..., Settings], sandbox: Sandbox
) -> Service:
    return await start_service(aiohttp_client, settings_factory(provider_url=sandbox.url, **FAST_ENGINE))
