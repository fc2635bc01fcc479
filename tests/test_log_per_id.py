"""`info_per_id`: one line per id, as the processors would make each (context, redaction, truncation), built
and written in one go; anywhere else, or with a refused key, it behaves as plain calls or refuses."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from mailer.observability.logging import REDACTED, configure_logging, info_per_id
from mailer.observability.truncate import MAX_VALUE_CHARS
from mailer.settings import Settings
from tests.conftest import ADMIN_PASSWORD, JWT_SECRET

IDS = [7, 8, 9, 10]


class CountingStream(io.StringIO):
    """A text stream that counts its flushes."""

    flushes = 0

    def flush(self) -> None:
        super().flush()
        self.flushes += 1

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@contextmanager
def logging_to(stream: io.StringIO, level: str = "INFO") -> Iterator[None]:
    settings = Settings(
        database_url="sqlite:///unused.db",
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
        log_format="json",
        log_level=level,
    )
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging(settings, stream=stream, cache_loggers=False)
    try:
        yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def test_one_line_per_id_each_with_the_context_redacted_and_truncated_written_at_once() -> None:
    stream = CountingStream()
    with logging_to(stream):
        structlog.contextvars.bind_contextvars(request_id="r-1")
        log = structlog.get_logger("test")
        info_per_id(log, "customer.imported", "customer_id", IDS, note=f"k {JWT_SECRET}", long="y" * 1000)
    lines = stream.lines()
    assert [line["customer_id"] for line in lines] == IDS
    assert stream.flushes == 1
    for line in lines:
        assert line["event"] == "customer.imported"
        assert line["request_id"] == "r-1"
        assert line["level"] == "info"
        assert line["note"] == f"k {REDACTED}"
        assert len(line["long"]) < 2 * MAX_VALUE_CHARS
    assert JWT_SECRET not in stream.getvalue()


def test_the_lines_are_those_of_one_call_per_id_but_for_the_timestamp() -> None:
    batched, single = io.StringIO(), io.StringIO()
    with logging_to(batched):
        info_per_id(structlog.get_logger("test"), "e", "customer_id", IDS, action="created")
    with logging_to(single):
        for each in IDS:
            structlog.get_logger("test").info("e", customer_id=each, action="created")

    def without_time(stream: io.StringIO) -> list[dict[str, Any]]:
        return [json.loads(line) | {"timestamp": None} for line in stream.getvalue().splitlines()]

    assert without_time(batched) == without_time(single)


def test_below_the_level_nothing_is_written() -> None:
    stream = io.StringIO()
    with logging_to(stream, level="WARNING"):
        info_per_id(structlog.get_logger("test"), "e", "customer_id", IDS)
    assert stream.getvalue() == ""


def test_with_structlog_configured_elsewhere_every_id_still_gets_its_line() -> None:
    with structlog.testing.capture_logs() as captured:
        info_per_id(structlog.get_logger("test"), "e", "customer_id", IDS, action="updated")
    assert [(line["customer_id"], line["action"]) for line in captured] == [(i, "updated") for i in IDS]


@pytest.mark.parametrize(
    ("key", "ids"), [("api_token", [1, 2]), ("customer_id", ["1", "2"]), ("customer_id", [1, True])]
)
def test_a_secret_looking_key_or_ids_that_are_not_ints_are_refused(key: str, ids: list[Any]) -> None:
    with pytest.raises(ValueError, match="int ids"):
        info_per_id(structlog.get_logger("test"), "e", key, ids)
