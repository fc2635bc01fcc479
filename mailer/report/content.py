"""The daily report's content, built purely from statistics rows: a plain-text and an HTML rendering."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from mailer.domain.statuses import MessageStatus, Outcome
from mailer.report.queries import ERROR_KINDS, MailoutStats

_LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


@dataclass(frozen=True, slots=True)
class DailyReport:
    """The report for one date: the mailouts active in [since, until) and their totals."""

    report_date: date
    since: datetime
    until: datetime
    zone: str
    mailouts: Sequence[MailoutStats]

    @property
    def by_status(self) -> dict[MessageStatus, int]:
        return {status: sum(m.by_status[status] for m in self.mailouts) for status in MessageStatus}

    @property
    def errors_by_kind(self) -> dict[Outcome, int]:
        return {kind: sum(m.errors_by_kind[kind] for m in self.mailouts) for kind in ERROR_KINDS}

    @property
    def total(self) -> int:
        return sum(m.total for m in self.mailouts)

    @property
    def attempts(self) -> int:
        return sum(m.attempts for m in self.mailouts)

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())

    def local(self, at: datetime) -> str:
        return at.astimezone(ZoneInfo(self.zone)).strftime(_LOCAL_FORMAT)

    @property
    def subject(self) -> str:
        sent = self.by_status[MessageStatus.SENT]
        failed = self.by_status[MessageStatus.FAILED]
        return (
            f"mailer report {self.report_date.isoformat()}: {len(self.mailouts)} mailouts, "
            f"{sent} sent, {failed} failed, {self.errors} errors"
        )


STATUS_COLUMNS = tuple(MessageStatus)
ERROR_COLUMNS = ERROR_KINDS
STATUS_CAPTION = "Messages by status (now)"
ERRORS_CAPTION = "Provider requests in the period, errors by kind"
STATUS_HEADER = ("mailout", "status", "total", *STATUS_COLUMNS, "start", "end")
ERROR_HEADER = ("mailout", "requests", *ERROR_COLUMNS, "errors")


def _status_rows(report: DailyReport) -> list[list[object]]:
    rows: list[list[object]] = [
        [
            m.id,
            m.status,
            m.total,
            *(m.by_status[s] for s in STATUS_COLUMNS),
            report.local(m.start_at),
            report.local(m.end_at),
        ]
        for m in report.mailouts
    ]
    rows.append(["total", "", report.total, *(report.by_status[s] for s in STATUS_COLUMNS), "", ""])
    return rows


def _error_rows(report: DailyReport) -> list[list[object]]:
    rows: list[list[object]] = [
        [m.id, m.attempts, *(m.errors_by_kind[k] for k in ERROR_COLUMNS), sum(m.errors_by_kind.values())]
        for m in report.mailouts
    ]
    rows.append(["total", report.attempts, *(report.errors_by_kind[k] for k in ERROR_COLUMNS), report.errors])
    return rows


def _row(cells: Sequence[object], widths: Sequence[int]) -> str:
    return "  ".join(str(cell).rjust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    widths = [max(len(str(cells[i])) for cells in (header, *rows)) for i in range(len(header))]
    return [_row(header, widths), *(_row(cells, widths) for cells in rows)]


def render_text(report: DailyReport) -> str:
    """Fixed-width tables: one line per mailout, whose first cell is its id, then a `total` line."""
    lines = [
        f"Mailouts active between {report.local(report.since)} and {report.local(report.until)} "
        f"({report.zone}): {len(report.mailouts)}",
        "",
        STATUS_CAPTION,
    ]
    lines += _table(STATUS_HEADER, _status_rows(report))
    lines += ["", ERRORS_CAPTION]
    lines += _table(ERROR_HEADER, _error_rows(report))
    return "\n".join(lines) + "\n"


def _html_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for cells in rows:
        tds = "".join(
            f'<td data-key="{html.escape(key)}">{html.escape(str(cell))}</td>'
            for key, cell in zip(header, cells, strict=True)
        )
        body.append(f'<tr data-mailout="{html.escape(str(cells[0]))}">{tds}</tr>')
    return (
        f'<table border="1" cellpadding="4" cellspacing="0"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(report: DailyReport) -> str:
    """The same tables as HTML; every cell has a `data-key` and every row a `data-mailout` for tools."""
    title = html.escape(report.subject)
    period = html.escape(
        f"Mailouts active between {report.local(report.since)} and {report.local(report.until)} "
        f"({report.zone}): {len(report.mailouts)}"
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>'
        f"<h1>{title}</h1><p>{period}</p>"
        + _html_table(STATUS_CAPTION, STATUS_HEADER, _status_rows(report))
        + "<br>"
        + _html_table(ERRORS_CAPTION, ERROR_HEADER, _error_rows(report))
        + "</body></html>\n"
    )


def build_email(report: DailyReport, sender: str, recipients: Sequence[str], now: datetime) -> EmailMessage:
    """A multipart/alternative message: the plain text first, the HTML as the preferred alternative."""
    message = EmailMessage()
    message["Subject"] = report.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="mailer.invalid")
    message.set_content(render_text(report))
    message.add_alternative(render_html(report), subtype="html")
    return message
