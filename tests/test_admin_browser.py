"""The admin UI in a real browser (Debian's chromium through Playwright) against the service with its engine
and the sandbox provider on loopback: sign in, run a mailout to 100%, pause/resume/cancel, import, search,
sign out; axe-core finds no serious or critical problem on the main pages; screenshots at two widths.

Screenshots go to docs/screenshots/ with MAILER_SCREENSHOTS=1 (to refresh the README's), else to a tmp dir.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect

from mailer.settings import Settings
from sandbox.faults import SandboxFaults

# browser and session are fixtures: imported so that pytest finds them here.
from tests.browser_support import BrowserSession, browser, screenshot_dir, screenshots, session  # noqa: F401
from tests.conftest import ADMIN_PASSWORD, AiohttpClient
from tests.engine_support import FAST_ENGINE, start_sandbox, start_service

CUSTOMERS = 40
# Long enough to watch the bar move, short enough for a quick test: 40 sends, 8 at a time, ~50 ms each.
SANDBOX_LATENCY_MS = 50.0
# The live fragment refreshes every 3 s; the whole mailout takes well under a second of sending.
FINISH_TIMEOUT_MS = 30_000
# The mailout still running when the dashboard is looked at: 40 sends, 8 at a time, ~3 s each.
SLOW_LATENCY_MS = 3_000.0
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


async def accessibility_problems(page: Page) -> list[str]:
    results = await Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in BLOCKING_IMPACTS
    ]


async def check_page(page: Page, name: str, shots: Path, problems: dict[str, list[str]]) -> None:
    found = await accessibility_problems(page)
    if found:
        problems[name] = found
    await screenshots(page, shots, name)


async def test_an_operator_runs_a_whole_mailout_from_the_ui(
    aiohttp_client: AiohttpClient,
    settings_factory: Callable[..., Settings],
    session: BrowserSession,  # noqa: F811
    tmp_path: Path,
) -> None:
    sandbox = await start_sandbox(SandboxFaults(seed=7, latency_ms=SANDBOX_LATENCY_MS))
    try:
        settings = settings_factory(provider_url=sandbox.url, **FAST_ENGINE)
        service = await start_service(aiohttp_client, settings)
        await service.customers(CUSTOMERS)
        await run_the_ui(session.page, str(service.api.client.make_url("/admin/")), sandbox.faults, tmp_path)
    finally:
        await sandbox.server.close()


async def run_the_ui(page: Page, home: str, faults: SandboxFaults, tmp_path: Path) -> None:
    shots = screenshot_dir(tmp_path)
    problems: dict[str, list[str]] = {}

    # Sign in with the local form.
    await page.goto(home)
    await expect(page).to_have_url(re.compile(r"/admin/login"))
    await check_page(page, "login", shots, problems)
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(ADMIN_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()

    # Create a mailout that starts now; the form counts its audience as it is filled in.
    await page.get_by_role("link", name="Mailouts", exact=True).click()
    await page.get_by_role("link", name="New mailout").click()
    await expect(page.locator("#audience")).to_contain_text(f"Would reach {CUSTOMERS} customers")
    await page.get_by_label("Operator codes").fill("900")
    await expect(page.locator("#audience")).to_contain_text(f"Would reach {CUSTOMERS} customers")
    await page.get_by_label("Operator codes").fill("999")
    await expect(page.locator("#audience")).to_contain_text("Would reach 0 customers")
    await page.get_by_label("Operator codes").fill("")
    await page.get_by_label("Text of the message").fill("Hello from the admin UI")
    await check_page(page, "mailout-form", shots, problems)
    await page.get_by_role("button", name="Create mailout").click()
    await expect(page.get_by_role("heading", name=re.compile(r"^Mailout #\d+$"))).to_be_visible()

    # It runs against the sandbox; the page refreshes by itself until every message is sent.
    await expect(page.locator("#done-pct")).to_have_text("100% done", timeout=FINISH_TIMEOUT_MS)
    live = page.locator("#mailout-live")
    await expect(live.locator(".badge.s-finished")).to_be_visible(timeout=FINISH_TIMEOUT_MS)
    await expect(live).to_have_attribute("data-live", "false")
    await expect(page.get_by_role("row", name=re.compile(rf"^sent {CUSTOMERS} 100%"))).to_be_visible()
    await page.reload()
    await check_page(page, "mailout", shots, problems)

    # A second mailout, starting tomorrow: pause, resume and cancel it, each behind its confirmation.
    await page.get_by_role("link", name="Mailouts", exact=True).click()
    await page.get_by_role("link", name="New mailout").click()
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    await page.get_by_label("Start").fill(tomorrow.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("End").fill((tomorrow + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_label("Text of the message").fill("Tomorrow's news")
    await page.get_by_role("button", name="Create mailout").click()
    status = page.locator("#mailout-live .status-line .badge").first
    await expect(status).to_have_text("scheduled")
    for link, button, expected in (
        ("Pause", "Pause mailout", "paused"),
        ("Resume", "Resume mailout", "scheduled"),
        ("Cancel", "Cancel mailout", "cancelled"),
    ):
        await page.get_by_role("navigation", name="Mailout actions").get_by_role("link", name=link).click()
        await expect(
            page.get_by_role("heading", name=re.compile(rf"^{link} mailout #\d+\?$"))
        ).to_be_visible()
        await page.get_by_role("button", name=re.compile(rf"^{button}")).click()
        await expect(page.get_by_role("status")).to_be_visible()
        await expect(status).to_have_text(expected)
    await page.get_by_role("link", name="Mailouts", exact=True).click()
    await check_page(page, "mailouts", shots, problems)

    # Import a file: the upload shows its progress, the result lists the refused line.
    upload = tmp_path / "customers.csv"
    upload.write_text("phone,tag\n" + "".join(f"7911000{i:04d},imported\n" for i in range(200)) + "bad,x\n")
    await page.get_by_role("link", name="Customers", exact=True).click()
    await page.get_by_role("link", name="Import a file").click()
    await page.get_by_label("File (.csv or .ndjson)").set_input_files(upload)
    await page.get_by_role("button", name="Import").click()
    result = page.locator("#import-result")
    await expect(result).to_contain_text("Import finished")
    await expect(page.locator("#import-progress")).to_have_attribute("value", "100")
    await expect(result.get_by_role("row", name="Created 200")).to_be_visible()
    await expect(result.get_by_role("row", name=re.compile(r"^202 phone"))).to_be_visible()
    await check_page(page, "import", shots, problems)
    await page.get_by_role("link", name="Customers", exact=True).click()
    await page.get_by_label("Tag").fill("imported")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("cell", name="79110000000")).to_be_visible()
    await check_page(page, "customers", shots, problems)

    # Search from the header: a phone prefix finds customers, a word finds the mailout.
    await page.get_by_role("searchbox", name="Search").fill("7900000001")
    await page.get_by_role("searchbox", name="Search").press("Enter")
    await expect(page.get_by_role("heading", name=re.compile(r"^Customers \(\d+\)"))).to_be_visible()
    await expect(page.get_by_role("cell", name="79000000010")).to_be_visible()
    await page.get_by_role("searchbox", name="Search").fill("admin UI")
    await page.get_by_role("searchbox", name="Search").press("Enter")
    await expect(page.get_by_role("heading", name="Mailouts (1)")).to_be_visible()
    await check_page(page, "search", shots, problems)

    # A slow provider now: a third mailout is still running when the dashboard shows it; cancel it there.
    faults.latency_ms = SLOW_LATENCY_MS
    await page.get_by_role("link", name="Mailouts", exact=True).click()
    await page.get_by_role("link", name="New mailout").click()
    await page.get_by_label("Text of the message").fill("Slow news")
    await page.get_by_role("button", name="Create mailout").click()
    await expect(status).to_have_text("running")
    await page.get_by_role("link", name="Dashboard").click()
    await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    running = page.get_by_role("row", name=re.compile(r"Slow news"))
    await expect(running).to_be_visible()
    await expect(running.get_by_role("img", name=re.compile(r"of \d+ messages done"))).to_be_visible()
    await check_page(page, "dashboard", shots, problems)
    await running.get_by_role("link").first.click()
    await page.get_by_role("navigation", name="Mailout actions").get_by_role("link", name="Cancel").click()
    await page.get_by_role("button", name=re.compile(r"^Cancel mailout")).click()
    await expect(status).to_have_text("cancelled")
    await expect(page.locator("#mailout-live")).to_have_attribute("data-live", "false")

    # Sign out: the session is gone, the UI asks for a sign-in again.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/admin/login"))
    await page.goto(home)
    await expect(page).to_have_url(re.compile(r"/admin/login"))

    assert problems == {}, problems
