"""Tests of mailer.provider.classify: the status and body rules, Retry-After parsing, and properties."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.domain.statuses import Outcome
from mailer.provider.classify import (
    DETAIL_MAX_CHARS,
    RETRY_AFTER_MAX_S,
    Classified,
    classify_response,
    parse_retry_after,
)

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
OK = b'{"code": 0, "message": "OK"}'


def test_200_with_code_zero_is_sent() -> None:
    assert classify_response(200, OK) == Classified(Outcome.SENT, None)
    assert classify_response(200, b'{"code":0}').outcome is Outcome.SENT


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"OK",
        b"<html>oops</html>",
        b'{"code": 1, "message": "busy"}',
        b'{"code": "0"}',
        b'{"code": false}',
        b'{"code": 0.0}',
        b'{"code": null}',
        b'{"message": "OK"}',
        b'[{"code": 0}]',
        b"0",
        b"null",
        b'{"code": 0',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b"1" * 10_000,
    ],
)
def test_any_other_200_is_a_transient_bad_body(body: bytes) -> None:
    result = classify_response(200, body)
    assert result.outcome is Outcome.TRANSIENT
    assert result.detail is not None
    assert result.detail.startswith("bad body: ")
    assert len(result.detail) <= DETAIL_MAX_CHARS


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (401, Outcome.UNAUTHORIZED),
        (403, Outcome.UNAUTHORIZED),
        (408, Outcome.TRANSIENT),
        (429, Outcome.TRANSIENT),
        (500, Outcome.TRANSIENT),
        (502, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
        (599, Outcome.TRANSIENT),
        (400, Outcome.REJECTED),
        (404, Outcome.REJECTED),
        (409, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (499, Outcome.REJECTED),
        (100, Outcome.TRANSIENT),
        (201, Outcome.TRANSIENT),
        (204, Outcome.TRANSIENT),
        (301, Outcome.TRANSIENT),
        (307, Outcome.TRANSIENT),
    ],
)
def test_status_decides_for_anything_but_200(status: int, outcome: Outcome) -> None:
    # Even an "OK" body does not make a non-200 a success.
    result = classify_response(status, OK)
    assert result.outcome is outcome
    assert result.detail is not None
    assert result.detail.startswith(f"HTTP {status}: ")


def test_detail_is_short_and_free_of_control_characters() -> None:
    body = "line one\r\nline two\x00\x1b[31m\x7f\u2028".encode() + b"x" * 10_000
    detail = classify_response(500, body).detail
    assert detail is not None
    assert len(detail) <= DETAIL_MAX_CHARS
    assert detail.isprintable()
    assert "line one  line two" in detail
    assert detail.endswith("…")


def test_empty_body_is_named() -> None:
    assert classify_response(200, b"").detail == "bad body: <empty>"
    assert classify_response(503, b"").detail == "HTTP 503: <empty>"


@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=2048))
def test_classify_never_raises_and_detail_is_bounded(status: int, body: bytes) -> None:
    result = classify_response(status, body)
    assert isinstance(result.outcome, Outcome)
    if result.detail is not None:
        assert len(result.detail) <= DETAIL_MAX_CHARS
        assert result.detail.isprintable()


@given(extra=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "code"), st.integers(), max_size=5))
def test_any_object_with_code_zero_is_sent(extra: dict[str, int]) -> None:
    body = json.dumps({**extra, "code": 0}).encode()
    assert classify_response(200, body).outcome is Outcome.SENT


@given(status=st.integers(min_value=100, max_value=599), body=st.text(max_size=300))
def test_classify_never_raises_on_text_bodies(status: int, body: str) -> None:
    assert isinstance(classify_response(status, body.encode("utf-8", "surrogatepass")).outcome, Outcome)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("1", 1.0),
        (" 120 ", 120.0),
        ("-5", 0.0),
        ("soon", None),
        ("1.5", None),
        ("1e3", None),
        ("9" * 100, None),
        ("Fri, 01 Mar 2024 12:00:30 GMT", 30.0),
        ("Fri, 01 Mar 2024 11:00:00 GMT", 0.0),
        ("Friday, 01-Mar-24 12:01:00 GMT", 60.0),
        ("Fri Mar  1 12:00:10 2024", 10.0),
        ("Fri, 01 Mar 2024 12:00:05 -0000", 5.0),
        ("Fri, 32 Mar 2024 12:00:05 GMT", None),
        ("Fri, 01 Mar 9999 12:00:05 GMT", RETRY_AFTER_MAX_S),
        (str(10**12), RETRY_AFTER_MAX_S),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_with_a_naive_or_shifted_now() -> None:
    assert parse_retry_after("Fri, 01 Mar 2024 12:00:30 GMT", NOW.replace(tzinfo=None)) == 30.0
    moscow = timezone(timedelta(hours=3))
    assert parse_retry_after("Fri, 01 Mar 2024 12:00:30 GMT", NOW.astimezone(moscow)) == 30.0


@given(value=st.one_of(st.none(), st.text(max_size=80)))
def test_parse_retry_after_never_raises(value: str | None) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or 0.0 <= result <= RETRY_AFTER_MAX_S
