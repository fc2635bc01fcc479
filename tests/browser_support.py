"""Browser fixtures: Debian's chromium driven by Playwright's async API, loopback only.

Our own async fixtures, not pytest-playwright (its sync event loop clashes with pytest-aiohttp's). Without
chromium the browser tests are skipped with a message, except with CI=true, where that is a failure.
Every request to an address other than loopback is aborted and fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, ViewportSize, async_playwright

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("MAILER_TEST_CHROMIUM", "/usr/bin/chromium")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Screenshots go to docs/screenshots/ when this is set (to refresh the README's), else to the test's tmp dir.
SCREENSHOTS_ENV = "MAILER_SCREENSHOTS"
SCREENSHOTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# Playwright's default of 30 s hides a hang for too long; a page of ours answers in milliseconds.
ACTION_TIMEOUT_MS = 10_000


def chromium_or_skip() -> str:
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        message = f"chromium not found at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_or_skip()
    async with async_playwright() as playwright:
        # --no-sandbox: CI and the development machines run as root, where chromium's sandbox cannot start.
        launched = await playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Guard:
    """Records every request that tried to leave loopback (each one was aborted).

    `tolerated_pages`: URL prefixes of pages that are not ours (a test tool's, like the OIDC provider mock's,
    which links a CDN stylesheet); their requests are aborted too but noted in `tolerated`, not `refused`.
    """

    refused: list[str] = field(default_factory=list)
    tolerated_pages: tuple[str, ...] = ()
    tolerated: list[str] = field(default_factory=list)

    async def route(self, route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK_HOSTS:
            await route.continue_()
            return
        frame_url = route.request.frame.url if self.tolerated_pages else ""
        if self.tolerated_pages and frame_url.startswith(self.tolerated_pages):
            self.tolerated.append(route.request.url)
        else:
            self.refused.append(route.request.url)
        await route.abort()


@dataclass
class BrowserSession:
    context: BrowserContext
    page: Page
    guard: Guard


async def open_session(
    browser: Browser, *, tolerated_pages: tuple[str, ...] = (), **context_options: Any
) -> BrowserSession:
    context = await browser.new_context(viewport=DESKTOP, **context_options)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    guard = Guard(tolerated_pages=tolerated_pages)
    await context.route("**/*", guard.route)
    page = await context.new_page()
    return BrowserSession(context, page, guard)


@pytest.fixture
async def session(browser: Browser) -> AsyncIterator[BrowserSession]:
    """A fresh browser context and page; at the end, no request may have tried to leave loopback."""
    opened = await open_session(browser)
    try:
        yield opened
    finally:
        await opened.context.close()
    assert opened.guard.refused == [], f"requests to non-loopback addresses: {opened.guard.refused}"


def screenshot_dir(tmp_path: Path) -> Path:
    if os.environ.get(SCREENSHOTS_ENV):
        SCREENSHOTS_DIR.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS_DIR
    return tmp_path


async def screenshots(page: Page, directory: Path, name: str) -> None:
    """The page at desktop width and at 390 px (a phone), full length."""
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=directory / f"{name}-desktop.png", full_page=True)
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=directory / f"{name}-phone.png", full_page=True)
    await page.set_viewport_size(DESKTOP)
