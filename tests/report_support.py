"""Helpers for the report tests: a seeded database with known numbers, and an SMTP server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.report.content import ERROR_HEADER, STATUS_HEADER
from mailer.store.tables import mailouts, message_attempts, messages

SMTP_USER = "reporter"
SMTP_PASSWORD = "smtp-password-never-logged"

# The instant the seeded report is made for (the `until` of its window); whole seconds, as stored.
UNTIL = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


@dataclass
class Seeded:
    """Ids of the seeded mailouts: a, b and e belong in the report, c and d do not."""

    a: int
    b: int
    c: int
    d: int
    e: int


# What the report over [UNTIL - 24 h, UNTIL) must say about the seeded data.
EXPECTED_STATUS = {
    "a": {"pending": 2, "sending": 0, "sent": 3, "failed": 1, "expired": 0, "cancelled": 0, "total": 6},
    "b": {"pending": 0, "sending": 0, "sent": 2, "failed": 0, "expired": 1, "cancelled": 1, "total": 4},
    "e": {"pending": 0, "sending": 0, "sent": 0, "failed": 0, "expired": 0, "cancelled": 1, "total": 1},
}
EXPECTED_ERRORS = {
    "a": {"requests": 6, "transient": 2, "rejected": 1, "timeout": 0, "errors": 3},
    "b": {"requests": 2, "transient": 0, "rejected": 0, "timeout": 0, "errors": 0},
    "e": {"requests": 0, "transient": 0, "rejected": 0, "timeout": 0, "errors": 0},
}
EXPECTED_TOTAL_STATUS = {"total": 11, "pending": 2, "sent": 5, "failed": 1, "expired": 1, "cancelled": 2}
EXPECTED_TOTAL_ERRORS = {"requests": 8, "transient": 2, "rejected": 1, "errors": 3}


async def seed(db: AsyncEngine, until: datetime = UNTIL) -> Seeded:
    """Five mailouts around the 24 hours before `until`, with messages and attempts of known counts."""
    h = timedelta(hours=1)

    async def mailout(status: str, start: datetime, end: datetime, updated: datetime, **extra: Any) -> int:
        async with db.begin() as conn:
            result = await conn.execute(
                mailouts.insert().values(
                    start_at=start,
                    end_at=end,
                    text="hello",
                    operator_codes=[],
                    tags=[],
                    status=status,
                    created_at=start - 2 * h,
                    updated_at=updated,
                    **extra,
                )
            )
            assert result.inserted_primary_key is not None
            return int(result.inserted_primary_key[0])

    async def add_messages(mailout_id: int, statuses: dict[str, int]) -> list[int]:
        ids = []
        async with db.begin() as conn:
            for status, count in statuses.items():
                for _ in range(count):
                    result = await conn.execute(
                        messages.insert().values(
                            mailout_id=mailout_id,
                            customer_id=None,
                            phone="79000000000",
                            timezone="UTC",
                            status=status,
                            created_at=until - 30 * h,
                            updated_at=until - h,
                        )
                    )
                    assert result.inserted_primary_key is not None
                    ids.append(int(result.inserted_primary_key[0]))
        return ids

    async def attempts(mailout_id: int, message_id: int, outcomes: list[tuple[str, datetime]]) -> None:
        async with db.begin() as conn:
            for outcome, at in outcomes:
                await conn.execute(
                    message_attempts.insert().values(
                        message_id=message_id,
                        mailout_id=mailout_id,
                        started_at=at,
                        duration_ms=12.5,
                        outcome=outcome,
                        http_status=200 if outcome == "sent" else 500,
                    )
                )

    a = await mailout("running", until - 2 * h, until + 10 * h, until - 2 * h, activated_at=until - 2 * h)
    msgs = await add_messages(a, {"sent": 3, "failed": 1, "pending": 2})
    await attempts(
        a,
        msgs[0],
        [
            ("sent", until - h),
            ("sent", until - h),
            ("sent", until - h),
            ("transient", until - 90 * timedelta(minutes=1)),
            ("transient", until - 80 * timedelta(minutes=1)),
            ("rejected", until - 70 * timedelta(minutes=1)),
            # Outside the window: an error of the day before must not be counted.
            ("transient", until - 30 * h),
        ],
    )
    b = await mailout("finished", until - 20 * h, until - 3 * h, until - 3 * h, finished_at=until - 3 * h)
    msgs = await add_messages(b, {"sent": 2, "expired": 1, "cancelled": 1})
    await attempts(
        b, msgs[0], [("sent", until - 19 * h), ("sent", until - 19 * h), ("timeout", until - 25 * h)]
    )
    c = await mailout("finished", until - 72 * h, until - 48 * h, until - 48 * h, finished_at=until - 48 * h)
    await add_messages(c, {"sent": 5})
    d = await mailout("scheduled", until + 24 * h, until + 30 * h, until - 40 * h)
    e = await mailout("cancelled", until - 5 * h, until + 5 * h, until - h)
    await add_messages(e, {"cancelled": 1})
    return Seeded(a=a, b=b, c=c, d=d, e=e)


def text_rows(text: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The two tables of the plain-text part as {first cell: {column: cell}}; the `total` rows included."""
    status_rows: dict[str, dict[str, str]] = {}
    error_rows: dict[str, dict[str, str]] = {}
    section: dict[str, dict[str, str]] | None = None
    header: tuple[str, ...] = ()
    for line in text.splitlines():
        cells = line.split()
        if cells[:2] == ["mailout", "status"]:
            section, header = status_rows, STATUS_HEADER
        elif cells[:2] == ["mailout", "requests"]:
            section, header = error_rows, ERROR_HEADER
        elif section is not None and cells:
            if cells[0] == "total" and header is STATUS_HEADER:
                # The total row leaves status, start and end empty.
                names = [h for h in header if h not in ("status", "start", "end")]
                section["total"] = dict(zip(names, cells, strict=True))
            elif cells[0].isdigit() or cells[0] == "total":
                section[cells[0]] = dict(zip(header, cells, strict=True))
        if not cells:
            section = None
    return status_rows, error_rows


def html_cell(html_text: str, table_index: int, row: str, key: str) -> str:
    """The text of cell `key` in the row `data-mailout=row` of the table-th table of the HTML part."""
    table = html_text.split("<table")[table_index + 1]
    row_html = re.search(rf'<tr data-mailout="{re.escape(row)}">(.*?)</tr>', table)
    assert row_html is not None, f"no row {row} in table {table_index}"
    cell = re.search(rf'<td data-key="{re.escape(key)}">(.*?)</td>', row_html.group(1))
    assert cell is not None, f"no cell {key} in row {row}"
    return cell.group(1)


def parts(raw: bytes) -> tuple[EmailMessage, str, str]:
    """The parsed message and its plain-text and HTML parts."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    plain = message.get_body(preferencelist=("plain",))
    rich = message.get_body(preferencelist=("html",))
    assert plain is not None, message.get_content_type()
    assert rich is not None, message.get_content_type()
    assert isinstance(plain, EmailMessage)
    assert isinstance(rich, EmailMessage)
    return message, str(plain.get_content()), str(rich.get_content())


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps what arrives; refuses the next `fail_next` messages with a 451."""

    messages: list[Envelope] = field(default_factory=list)
    fail_next: int = 0
    logins: list[tuple[str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_next > 0:
            self.fail_next -= 1
            return "451 4.3.0 try again later"
        self.messages.append(envelope)
        self.arrived.set()
        return "250 OK"

    async def wait(self, count: int = 1, timeout_s: float = 10.0) -> list[Envelope]:
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.messages

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            self.logins.append((user, password))
            return AuthResult(success=user == SMTP_USER and password == SMTP_PASSWORD)
        return AuthResult(success=False)


@asynccontextmanager
async def smtp_server(inbox: Inbox, *, auth: bool = False) -> AsyncIterator[int]:
    """aiosmtpd on 127.0.0.1, a free port, in the test's own event loop; yields the port."""
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"hostname": "mailer.test"}
    if auth:
        # Loopback only: plain-text AUTH is acceptable here and keeps TLS certificates out of the test.
        options.update(authenticator=inbox.authenticate, auth_require_tls=False)
    server = await loop.create_server(lambda: SMTP(inbox, **options), "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()
