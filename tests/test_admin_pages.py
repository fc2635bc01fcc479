"""The admin pages through aiohttp's test client, on SQLite and PostgreSQL, signed in by the local form."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from sqlalchemy import event, update

from mailer import keys
from mailer.admin.pages import csv_export
from mailer.admin.pages.charts import CHART_HEIGHT, MAX_MINUTES, MIN_MINUTES, minute_series
from mailer.admin.pages.mailout_form import api_body, locked_fields
from mailer.admin.pages.progress import STALLED_AFTER_S, progress
from mailer.app import create_app
from mailer.domain.mailouts import AudienceFilter, Mailout, MailoutSpec
from mailer.domain.statuses import MailoutStatus, MessageStatus
from mailer.settings import Settings
from mailer.store.tables import mailouts
from tests.conftest import ADMIN_PASSWORD, AiohttpClient, Api
from tests.log_support import captured_logs
from tests.recording_engine import RecordingEngine

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Admin:
    """A signed-in browser, without the browser: cookies kept, the CSRF token read off the pages."""

    def __init__(self, client: TestClient[Any, Any], api: Api, engine: RecordingEngine) -> None:
        self.client = client
        self.api = api
        self.engine = engine
        self.csrf = ""

    async def page(self, path: str, status: int = 200) -> str:
        resp = await self.client.get(path)
        text = await resp.text()
        assert resp.status == status, text[:2000]
        if found := CSRF.search(text):
            self.csrf = found.group(1)
        return text

    async def submit(self, path: str, fields: dict[str, str], status: int = 303) -> tuple[Any, str]:
        resp = await self.client.post(path, data={**fields, "csrf_token": self.csrf}, allow_redirects=False)
        text = await resp.text()
        assert resp.status == status, text[:2000]
        return resp, text


async def sign_in(client: TestClient[Any, Any]) -> str:
    """The local sign-in form, as a person uses it; the session's CSRF token."""
    page = await (await client.get("/admin/login")).text()
    token = CSRF.search(page)
    assert token is not None, page
    resp = await client.post(
        "/admin/login",
        data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    home = await (await client.get("/admin/")).text()
    found = CSRF.search(home)
    assert found is not None
    return found.group(1)


@pytest.fixture
async def admin(aiohttp_client: AiohttpClient, settings: Settings) -> Admin:
    app: web.Application = create_app(settings, with_engine=False)
    engine = RecordingEngine()
    app[keys.ENGINE] = engine
    client: TestClient[Any, Any] = await aiohttp_client(app)
    resp = await client.post("/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    api = Api(client, (await resp.json())["access_token"])
    session = Admin(client, api, engine)
    session.csrf = await sign_in(client)
    return session


def minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


FUTURE = datetime(2031, 1, 31, 9, 0, tzinfo=UTC)


def mailout_fields(**overrides: str) -> dict[str, str]:
    fields = {
        "start_at": minute(FUTURE),
        "end_at": minute(FUTURE + timedelta(hours=12)),
        "text": "Sale tonight",
        "operator_codes": "912, 916",
        "tags": "vip",
        "window_start": "09:00",
        "window_end": "21:00",
    }
    return fields | overrides


def mailout_spec() -> MailoutSpec:
    return MailoutSpec(FUTURE, FUTURE + timedelta(hours=1), "x", AudienceFilter(), None)


async def create_via_form(admin: Admin, **overrides: str) -> int:
    await admin.page("/admin/mailouts/new")
    resp, _ = await admin.submit("/admin/mailouts/new", mailout_fields(**overrides))
    found = re.fullmatch(r"/admin/mailouts/(\d+)\?notice=created", resp.headers["Location"])
    assert found, resp.headers["Location"]
    return int(found.group(1))


async def customer(api: Api, phone: str, **fields: Any) -> dict[str, Any]:
    resp = await api.post("/api/customers/", json={"phone": phone, **fields})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


# --- pages and sign-in ------------------------------------------------------------------------------------


async def test_every_main_page_renders_for_a_signed_in_operator(admin: Admin) -> None:
    mailout_id = await create_via_form(admin)
    for path in (
        "/admin/",
        "/admin/mailouts",
        "/admin/mailouts/new",
        f"/admin/mailouts/{mailout_id}",
        f"/admin/mailouts/{mailout_id}/edit",
        "/admin/customers",
        "/admin/customers/new",
        "/admin/customers/import",
        "/admin/search?q=vip",
    ):
        text = await admin.page(path)
        assert '<main id="main"' in text
        assert "Signed in as <strong>admin</strong>" in text


async def test_a_page_without_a_session_sends_to_the_login(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/admin/mailouts", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/admin/login")


async def test_an_unknown_mailout_is_an_html_404(admin: Admin) -> None:
    text = await admin.page("/admin/mailouts/999999", status=404)
    assert "mailout 999999 not found" in text


# --- mailouts ---------------------------------------------------------------------------------------------


async def test_create_through_the_form_is_the_api_s_mailout_and_is_logged_with_the_user(
    admin: Admin, settings: Settings
) -> None:
    with captured_logs(settings) as logs:
        mailout_id = await create_via_form(admin)
    body = await (await admin.api.get(f"/api/mailouts/{mailout_id}")).json()
    assert body["text"] == "Sale tonight"
    assert body["start_at"] == "2031-01-31T09:00:00Z"
    assert body["filter"] == {"operator_codes": ["912", "916"], "tags": ["vip"]}
    assert body["send_window"] == {"start": "09:00", "end": "21:00"}
    assert ("changed", mailout_id) in admin.engine.calls
    created = logs.events("mailout.created")
    assert created
    assert created[0]["mailout_id"] == mailout_id
    assert created[0]["user"] == "admin"


async def test_a_bad_form_is_shown_again_with_the_error_next_to_its_field(admin: Admin) -> None:
    await admin.page("/admin/mailouts/new")
    fields = mailout_fields(end_at=minute(FUTURE - timedelta(hours=1)), operator_codes="91")
    _, text = await admin.submit("/admin/mailouts/new", fields, status=422)
    assert 'id="f-end_at-error"' in text
    assert "end_at must be later than start_at" in text
    assert 'aria-describedby="f-end_at-error"' in text or 'f-end_at-error"' in text
    assert 'id="f-operator_codes-error"' in text
    # What was typed stays in the form.
    assert 'value="91"' in text
    assert (await (await admin.api.get("/api/mailouts/")).json())["items"] == []


async def test_a_running_mailout_locks_start_and_audience_and_a_forced_change_is_409(admin: Admin) -> None:
    mailout_id = await create_via_form(admin)
    async with admin.api.db.begin() as conn:
        await conn.execute(
            update(mailouts)
            .where(mailouts.c.id == mailout_id)
            .values(status="running", activated_at=datetime.now(UTC))
        )
    text = await admin.page(f"/admin/mailouts/{mailout_id}/edit")
    assert re.search(r'name="start_at"[^>]*disabled', text)
    assert re.search(r'name="operator_codes"[^>]*disabled', text)
    assert not re.search(r'name="text"[^>]*disabled', text)
    # A tampered form that sends the locked filter anyway meets the API's rule, in words.
    _, text = await admin.submit(
        f"/admin/mailouts/{mailout_id}/edit", {"text": "New words", "operator_codes": "999"}, status=409
    )
    assert "cannot change filter" in text
    # The allowed change goes through.
    await admin.submit(f"/admin/mailouts/{mailout_id}/edit", {"text": "New words"})
    body = await (await admin.api.get(f"/api/mailouts/{mailout_id}")).json()
    assert body["text"] == "New words"
    assert body["filter"]["operator_codes"] == ["912", "916"]


async def test_pause_resume_cancel_and_delete_go_through_a_confirmation(admin: Admin) -> None:
    mailout_id = await create_via_form(admin)
    base = f"/admin/mailouts/{mailout_id}"

    async def status() -> str:
        return str((await (await admin.api.get(f"/api/mailouts/{mailout_id}")).json())["status"])

    steps = (
        ("pause", "paused", "paused"),
        ("resume", "resumed", "scheduled"),
        ("cancel", "cancelled", "cancelled"),
    )
    for action, notice, expected in steps:
        confirm = await admin.page(f"{base}/{action}")
        assert f"{action.capitalize()} mailout #{mailout_id}?" in confirm
        assert await status() != expected  # the confirmation page itself changes nothing
        resp, _ = await admin.submit(f"{base}/{action}", {})
        assert resp.headers["Location"] == f"{base}?notice={notice}"
        assert await status() == expected
    # Pausing what is cancelled is the API's 409, shown on the confirmation page.
    _, text = await admin.submit(f"{base}/pause", {}, status=409)
    assert "cannot be paused" in text
    await admin.page(f"{base}/delete")
    await admin.submit(f"{base}/delete", {})
    assert (await admin.api.get(f"/api/mailouts/{mailout_id}")).status == 404
    assert ("stop", mailout_id) in admin.engine.calls


async def test_a_post_without_the_csrf_token_changes_nothing(admin: Admin) -> None:
    resp = await admin.client.post("/admin/mailouts/new", data=mailout_fields(), allow_redirects=False)
    assert resp.status == 403
    assert (await (await admin.api.get("/api/mailouts/")).json())["items"] == []


async def test_the_list_filters_by_status_and_text(admin: Admin) -> None:
    first = await create_via_form(admin, text="Black friday")
    second = await create_via_form(admin, text="Cyber monday")
    await admin.submit(f"/admin/mailouts/{second}/pause", {})
    text = await admin.page("/admin/mailouts?text=FRIDAY")
    assert f"#{first}<" in text
    assert f"#{second}<" not in text
    text = await admin.page("/admin/mailouts?status=paused")
    assert f"#{second}<" in text
    assert f"#{first}<" not in text


async def test_audience_count_follows_the_filter_and_the_window(admin: Admin) -> None:
    await customer(admin.api, "79120000001", tag="vip", timezone="Asia/Tokyo")
    await customer(admin.api, "79120000002", tag="vip", timezone="America/New_York")
    await customer(admin.api, "79160000003", tag="new")
    await admin.page("/admin/mailouts/new")
    _, text = await admin.submit(
        "/admin/audience/count", {"operator_codes": "912", "tags": "vip"}, status=200
    )
    assert "Would reach <strong>2</strong> customers." in text
    # New York's clock is 14 hours behind Tokyo's (10 ahead, modulo a day; 13 in its summer): a window from an
    # hour before Tokyo's time to 9 hours after holds Tokyo and not New York.
    now = datetime.now(UTC)
    tokyo = now.astimezone(ZoneInfo("Asia/Tokyo"))
    start = (tokyo - timedelta(hours=1)).strftime("%H:%M")
    end = (tokyo + timedelta(hours=9)).strftime("%H:%M")
    fields = {"operator_codes": "912", "tags": "vip", "window_start": start, "window_end": end}
    _, text = await admin.submit("/admin/audience/count", fields, status=200)
    assert "<strong>1</strong> of them inside the window now" in text
    _, text = await admin.submit("/admin/audience/count", {"operator_codes": "9x"}, status=200)
    assert "Cannot count yet" in text


async def test_the_mailout_page_shows_counts_messages_and_a_csv_that_defuses_formulas(admin: Admin) -> None:
    risky = await customer(admin.api, "79120000001", tag='=HYPERLINK("http://x")')
    plain = await customer(admin.api, "79120000002", tag="vip")
    mailout_id = await create_via_form(admin, operator_codes="", tags="", window_start="", window_end="")
    for c in (risky, plain):
        resp = await admin.api.post(f"/api/mailouts/{mailout_id}/messages", json={"customer_id": c["id"]})
        assert resp.status == 201, await resp.text()
    text = await admin.page(f"/admin/mailouts/{mailout_id}")
    assert "79120000001" in text
    assert "79120000002" in text
    assert re.search(r"<th scope=\"row\">pending</th><td>2</td>", text)
    text = await admin.page(f"/admin/mailouts/{mailout_id}?phone=79120000002")
    assert "79120000002" in text
    assert "79120000001" not in text
    resp = await admin.client.get(f"/admin/mailouts/{mailout_id}/messages.csv?status=pending")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["phone"] for r in rows] == ["79120000001", "79120000002"]
    assert rows[0]["tag"] == '\'=HYPERLINK("http://x")'
    assert rows[1]["tag"] == "vip"
    resp = await admin.client.get(f"/admin/mailouts/{mailout_id}/messages.csv?status=sent")
    assert list(csv.DictReader(io.StringIO(await resp.text()))) == []


async def test_live_fragments_refresh_only_while_something_runs(admin: Admin) -> None:
    text = await admin.page("/admin/live/dashboard")
    assert 'data-live="false"' in text
    assert "Nothing is running." in text
    assert "Provider circuit breaker (this process): <strong>closed" in text
    mailout_id = await create_via_form(admin)
    text = await admin.page("/admin/live/dashboard")
    assert 'data-live="true"' in text  # a scheduled mailout is about to start
    text = await admin.page(f"/admin/mailouts/{mailout_id}/live")
    assert 'data-live="true"' in text
    await admin.submit(f"/admin/mailouts/{mailout_id}/cancel", {})
    text = await admin.page(f"/admin/mailouts/{mailout_id}/live")
    assert 'data-live="false"' in text
    # A script's poll without a session gets a status to act on, not the login page.
    await admin.client.post("/admin/logout", data={"csrf_token": admin.csrf})
    resp = await admin.client.get("/admin/live/dashboard", headers={"X-Requested-With": "fetch"})
    assert resp.status == 401


# --- customers --------------------------------------------------------------------------------------------


async def test_customers_filter_create_edit_and_delete(admin: Admin) -> None:
    await customer(admin.api, "79120000001", tag="vip")
    await customer(admin.api, "79260000002", tag="new")
    text = await admin.page("/admin/customers?phone=7912")
    assert "79120000001" in text
    assert "79260000002" not in text
    text = await admin.page("/admin/customers?operator_code=926")
    assert "79260000002" in text
    assert "79120000001" not in text
    text = await admin.page("/admin/customers?operator_code=9x", status=422)
    assert 'id="c-operator_code-error"' in text

    await admin.page("/admin/customers/new")
    _, text = await admin.submit("/admin/customers/new", {"phone": "79120000001"}, status=409)
    assert 'id="f-phone-error"' in text
    assert "already exists" in text
    _, text = await admin.submit("/admin/customers/new", {"phone": "12345"}, status=422)
    assert 'id="f-phone-error"' in text
    resp, _ = await admin.submit("/admin/customers/new", {"phone": "79990000003", "tag": "fresh"})
    new_id = int(re.findall(r"\d+", resp.headers["Location"])[0])
    body = await (await admin.api.get(f"/api/customers/{new_id}")).json()
    assert body["operator_code"] == "999"
    assert body["tag"] == "fresh"
    assert body["timezone"] == "UTC"

    await admin.page(f"/admin/customers/{new_id}/edit")
    await admin.submit(
        f"/admin/customers/{new_id}/edit", {"phone": "79990000003", "tag": "", "timezone": "Europe/Moscow"}
    )
    body = await (await admin.api.get(f"/api/customers/{new_id}")).json()
    assert body["tag"] is None
    assert body["timezone"] == "Europe/Moscow"

    await admin.page(f"/admin/customers/{new_id}/delete")
    await admin.submit(f"/admin/customers/{new_id}/delete", {})
    assert (await admin.api.get(f"/api/customers/{new_id}")).status == 404


@pytest.mark.parametrize("scripted", [True, False], ids=["script", "plain-form"])
async def test_import_shows_counts_and_the_refused_lines(admin: Admin, scripted: bool) -> None:
    await admin.page("/admin/customers/import")
    body = "phone,tag\n79120000001,vip\nnot-a-phone,x\n79120000002,\n"
    form = FormData()
    form.add_field("csrf_token", admin.csrf)
    form.add_field("file", body.encode(), filename="people.csv", content_type="text/csv")
    headers = {"X-CSRF-Token": admin.csrf, "X-Requested-With": "XMLHttpRequest"} if scripted else {}
    resp = await admin.client.post("/admin/customers/import", data=form, headers=headers)
    text = await resp.text()
    assert resp.status == 200, text
    assert re.search(r"Created</th><td>2<", text)
    assert re.search(r"Refused</th><td>1<", text)
    assert "<td>3</td><td>phone</td>" in text
    assert ("<h1>" in text) is not scripted  # the script gets the fragment, the plain form a page
    page = await (await admin.api.get("/api/customers/?phone=79120000001")).json()
    assert page["items"][0]["tag"] == "vip"


async def test_import_refuses_a_bad_header_in_words(admin: Admin) -> None:
    await admin.page("/admin/customers/import")
    form = FormData()
    form.add_field("file", b"name,phone\nx,79120000001\n", filename="x.csv", content_type="text/csv")
    resp = await admin.client.post(
        "/admin/customers/import", data=form, headers={"X-CSRF-Token": admin.csrf, "X-Requested-With": "x"}
    )
    assert resp.status == 422
    assert "unknown columns" in await resp.text()


# --- search -----------------------------------------------------------------------------------------------


async def test_search_groups_customers_and_mailouts(admin: Admin) -> None:
    await customer(admin.api, "79120000001", tag="sale")
    mailout_id = await create_via_form(admin, text="Big sale on Friday")
    text = await admin.page("/admin/search?q=sale")
    customers_part, mailouts_part = text.split('id="r-mailouts"')
    assert "79120000001" in customers_part
    assert f"#{mailout_id}</a>" in mailouts_part
    text = await admin.page("/admin/search?q=" + "x" * 201, status=422)
    assert "at most 200 characters" in text


# --- the pure parts of the pages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("vip", "vip"),
        ("a=b", "a=b"),
        (None, ""),
        (5, "5"),
    ],
)
def test_csv_cells_that_would_run_as_formulas_are_defused(value: object, expected: str) -> None:
    assert csv_export.cell(value) == expected


def test_progress_rate_eta_and_stall() -> None:
    start = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    mailout = Mailout(1, mailout_spec(), MailoutStatus.RUNNING, start, start, start)
    counts = dict.fromkeys(MessageStatus, 0) | {MessageStatus.SENT: 61, MessageStatus.PENDING: 120}
    # 60 sends after the first in 60 s: 60 per minute, 120 left: two minutes.
    state = progress(
        mailout, counts, start, start + timedelta(seconds=60), True, start + timedelta(seconds=61)
    )
    assert state.rate_per_min == pytest.approx(60.0)
    assert state.eta == timedelta(minutes=2)
    assert not state.stalled
    assert state.done == 61
    assert [s.status for s in state.segments] == [MessageStatus.SENT, MessageStatus.PENDING]
    assert sum(s.width_pct for s in state.segments) == pytest.approx(100.0)
    later = start + timedelta(seconds=60 + STALLED_AFTER_S + 1)
    assert progress(mailout, counts, start, start + timedelta(seconds=60), True, later).stalled
    # Nothing due (the window is closed for everyone): quiet, not stalled.
    assert not progress(mailout, counts, start, start + timedelta(seconds=60), False, later).stalled


def test_minute_series_keeps_the_time_axis_true() -> None:
    t = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    series = minute_series({t: 10, t + timedelta(minutes=2): 5}, {t + timedelta(minutes=2): 5})
    assert len(series.bars) == MIN_MINUTES
    by_minute = {b.minute: b for b in series.bars}
    assert by_minute[t + timedelta(minutes=1)].sent == 0
    assert by_minute[t + timedelta(minutes=2)].failed == 5
    assert series.peak == 10
    assert max(b.sent_height + b.failed_height for b in series.bars) == pytest.approx(CHART_HEIGHT)
    long = minute_series({t + timedelta(minutes=i): 1 for i in range(500)}, {})
    assert len(long.bars) == MAX_MINUTES
    assert long.bars[-1].minute == t + timedelta(minutes=499)


def test_the_form_speaks_the_api_s_body() -> None:
    body = api_body(
        {
            "start_at": "2031-01-31T09:00",
            "end_at": "2031-01-31T21:00",
            "text": "a\r\nb",
            "operator_codes": "912 916,917",
            "tags": " vip , new ,",
            "window_start": "",
            "window_end": "",
        }
    )
    assert body == {
        "start_at": "2031-01-31T09:00:00Z",
        "end_at": "2031-01-31T21:00:00Z",
        "text": "a\nb",
        "filter": {"operator_codes": ["912", "916", "917"], "tags": ["vip", "new"]},
        "send_window": None,
    }
    # Disabled fields are not sent by the browser, so they are not in the API's body either.
    assert api_body({"text": "x"}) == {"text": "x"}
    assert locked_fields(MailoutStatus.RUNNING) == {"start_at", "operator_codes", "tags"}
    assert locked_fields(MailoutStatus.SCHEDULED) == frozenset()


async def test_live_fragments_read_counters_never_count_messages(admin: Admin) -> None:
    """The refreshing parts must cost the sender nothing: no statement of theirs counts message rows."""
    for i in range(3):
        await customer(admin.api, f"7912000000{i}")
    mailout_id = await create_via_form(admin, operator_codes="", tags="", window_start="", window_end="")
    async with admin.api.db.begin() as conn:
        await conn.execute(
            update(mailouts)
            .where(mailouts.c.id == mailout_id)
            .values(status="running", activated_at=datetime.now(UTC))
        )
    for c in (await (await admin.api.get("/api/customers/")).json())["items"]:
        await admin.api.post(f"/api/mailouts/{mailout_id}/messages", json={"customer_id": c["id"]})
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.lower().split()))

    sync_engine = admin.api.db.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        for path in ("/admin/live/dashboard", f"/admin/mailouts/{mailout_id}/live"):
            text = await admin.page(path)
            assert 'data-live="true"' in text
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    assert statements
    on_messages = [s for s in statements if "from messages" in s]
    # Only bounded index probes touch messages: the first/last send and "is anything due" (LIMIT 1 each).
    assert on_messages
    assert all("limit" in s for s in on_messages), on_messages
    assert not any("count(" in s and "from messages" in s for s in statements)
