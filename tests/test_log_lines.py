"""`info_lines`: the recorder's batch of state lines, processed line by line without a call each and written
at once; the lines are those of one call each, and anywhere else it makes the calls."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from mailer.observability.logging import REDACTED, info_lines
from mailer.observability.truncate import MAX_VALUE_CHARS
from tests.conftest import JWT_SECRET
from tests.test_log_per_id import CountingStream, logging_to

LINES: list[tuple[str, dict[str, Any]]] = [
    (
        "message.sent",
        {"message_id": 1, "outcome": "sent", "http_status": 200, "duration_ms": 3.5, "error": None},
    ),
    ("message.pending", {"message_id": 2, "outcome": "transient", "error": f"HTTP 503: {JWT_SECRET}"}),
    ("message.failed", {"message_id": 3, "error": "x" * 1000, "next_attempt_at": None}),
]


def _without_time(stream: io.StringIO) -> list[str]:
    """The raw lines with the timestamp blanked: key order and rendering must match too."""
    return [json.dumps(json.loads(line) | {"timestamp": None}) for line in stream.getvalue().splitlines()]


def test_the_lines_are_those_of_one_call_each_but_for_the_timestamp() -> None:
    batched, single = io.StringIO(), io.StringIO()
    with logging_to(batched):
        structlog.contextvars.bind_contextvars(mailout_id=9)
        info_lines("mailer.engine.recorder", LINES)
    with logging_to(single):
        structlog.contextvars.bind_contextvars(mailout_id=9)
        for event, fields in LINES:
            structlog.get_logger("mailer.engine.recorder").info(event, **fields)
    assert _without_time(batched) == _without_time(single)
    assert len(_without_time(batched)) == len(LINES)


def test_each_line_is_redacted_and_truncated_and_all_are_written_with_one_flush() -> None:
    stream = CountingStream()
    with logging_to(stream):
        info_lines("mailer.engine.recorder", LINES)
    assert stream.flushes == 1
    sent, pending, failed = stream.lines()
    assert (sent["event"], sent["level"], sent["logger"]) == (
        "message.sent",
        "info",
        "mailer.engine.recorder",
    )
    assert pending["error"] == f"HTTP 503: {REDACTED}"
    assert len(failed["error"]) < 2 * MAX_VALUE_CHARS
    assert JWT_SECRET not in stream.getvalue()


def test_below_the_level_nothing_is_written() -> None:
    stream = CountingStream()
    with logging_to(stream, level="WARNING"):
        info_lines("mailer.engine.recorder", LINES)
    assert stream.getvalue() == ""
    assert stream.flushes == 0


def test_with_structlog_configured_elsewhere_every_line_is_still_logged() -> None:
    with structlog.testing.capture_logs() as captured:
        info_lines("mailer.engine.recorder", LINES)
    assert [(line["event"], line["message_id"]) for line in captured] == [
        (e, f["message_id"]) for e, f in LINES
    ]
