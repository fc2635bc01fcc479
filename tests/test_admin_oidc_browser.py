"""Signing in to the admin UI through a real OpenID Connect provider's pages, in headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from playwright.async_api import Browser, expect

from mailer.settings import Settings

# browser is a fixture: imported so that pytest finds it here.
from tests.browser_support import BrowserSession, browser, open_session  # noqa: F401
from tests.oidc_support import (
    MockProvider,
    mock_provider,
    oidc_service_settings,
    running_service,
    user,
)

SESSION_SECRET = "browser-session-secret-0123456789-abcdefghijklmn"


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with mock_provider(
        [user("alice", email="alice@example.com", email_verified=True, name="Alice Admin")]
    ) as p:
        yield p


@pytest.fixture
async def session(browser: Browser, provider: MockProvider) -> AsyncIterator[BrowserSession]:  # noqa: F811
    """A browser context where only the provider mock's own pages may ask (in vain) for off-machine files."""
    opened = await open_session(browser, tolerated_pages=(provider.url,))
    try:
        yield opened
    finally:
        await opened.context.close()
    assert opened.guard.refused == [], f"the admin UI asked for off-machine resources: {opened.guard.refused}"


@pytest.fixture
def browser_settings(settings_factory: Callable[..., Settings], provider: MockProvider) -> Settings:
    return oidc_service_settings(
        settings_factory, provider, SESSION_SECRET, oidc_allowed_emails="alice@example.com"
    )


async def test_sign_in_and_out_through_the_providers_pages(
    session: BrowserSession, browser_settings: Settings, provider: MockProvider
) -> None:
    tab = session.page
    async with running_service(browser_settings) as service:
        await tab.goto(f"{service}/admin/mailouts")
        await expect(tab).to_have_url(f"{service}/admin/login?next=/admin/mailouts")
        await tab.get_by_role("link", name="Sign in with 127.0.0.1").click()
        await expect(tab.get_by_role("heading", name="Authorize Client")).to_be_visible()
        assert tab.url.startswith(f"{provider.url}/oauth2/authorize?")
        await tab.get_by_role("button", name="Authorize as alice").click()
        # Back in the admin UI, on the page first asked for, signed in.
        await expect(tab).to_have_url(f"{service}/admin/mailouts")
        await expect(tab.get_by_text("Alice Admin")).to_be_visible()
        await tab.get_by_role("button", name="Sign out").click()
        await expect(tab.get_by_role("heading", name="End Session")).to_be_visible()
        await tab.get_by_role("button", name="End session").click()
        await expect(tab).to_have_url(f"{service}/admin/login")
        await tab.goto(f"{service}/admin/")
        await expect(tab).to_have_url(f"{service}/admin/login?next=/admin/")
    # The provider's pages asked for their CDN stylesheet and were refused it: the guard is live.
    assert session.guard.tolerated
