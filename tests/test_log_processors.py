"""The redactor and the truncation processor on every kind of value a line can carry (their fast paths
pass ids, counts and None over without a call: these pin down that nothing else is passed over)."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from mailer.observability.logging import REDACTED, Redactor, register_secret
from mailer.observability.truncate import MAX_VALUE_CHARS, TruncateValues

SECRET = "s3cr3t-token-value-0123456789"


class Color(StrEnum):
    RED = "red"


def redact(**event: Any) -> dict[str, Any]:
    return dict(Redactor([SECRET])(None, "info", dict(event)))


def truncate(**event: Any) -> dict[str, Any]:
    return dict(TruncateValues()(None, "info", dict(event)))


def test_the_redactor_passes_plain_values_and_redacts_secret_keys_whatever_their_type() -> None:
    assert redact(message_id=7, duration_ms=1.5, ok=True, error=None) == {
        "message_id": 7,
        "duration_ms": 1.5,
        "ok": True,
        "error": None,
    }
    assert redact(password=12345678, token=1.0) == {"password": REDACTED, "token": REDACTED}
    assert redact(password=None) == {"password": None}


def test_the_redactor_still_reaches_text_nested_values_and_objects() -> None:
    assert redact(detail=f"Bearer {SECRET}")["detail"] == f"Bearer {REDACTED}"
    assert redact(headers={"Authorization": f"Bearer {SECRET}", "n": 1}) == {
        "headers": {"Authorization": REDACTED, "n": 1}
    }
    assert redact(items=(SECRET, 2)) == {"items": [REDACTED, 2]}
    assert redact(error=ValueError(f"bad {SECRET}")) == {"error": f"bad {REDACTED}"}
    assert redact(raw=SECRET.encode()) == {"raw": REDACTED}
    assert redact(color=Color.RED) == {"color": "red"}


def test_truncation_clips_long_strings_at_any_depth_and_leaves_the_rest() -> None:
    long = "x" * (MAX_VALUE_CHARS + 10)
    clipped = truncate(a=long, b="short", n=5, none=None, exception=long)
    assert clipped["a"].startswith("x" * MAX_VALUE_CHARS)
    assert clipped["a"].endswith(f"[{len(long)} chars]")
    assert (clipped["b"], clipped["n"], clipped["none"], clipped["exception"]) == ("short", 5, None, long)
    nested = truncate(d={"k": long}, t=(long, 1), color=Color.RED)
    assert nested["d"]["k"] != long
    assert nested["t"][0] != long
    assert nested["t"][1] == 1
    assert nested["color"] is Color.RED


def test_a_text_found_clean_is_redacted_once_it_becomes_a_secret() -> None:
    """Short texts found clean are remembered; a secret registered at run time must still be caught in
    them (the generated administrator password is registered after the first lines are written)."""
    redactor = Redactor([SECRET])
    late = f"late-{uuid.uuid4().hex}"
    assert redactor.text(late) == late
    assert redactor.text(late) == late  # now from what it remembers
    register_secret(late)
    assert redactor.text(late) == REDACTED
    assert redactor.text(f"x {late} y") == f"x {REDACTED} y"
